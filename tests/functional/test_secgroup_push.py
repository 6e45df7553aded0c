"""Controller → real agents: security-group changes reach exactly the affected hosts' kernels, with
generations; a host that missed a push is retried until current; reconnect pushes the full set (root)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flatnet_env import Env, flatnet_env_fixture  # noqa: F401  (fixture)
from secgroup_lab import running_lab
from test_secgroup_enforce import A_IP, B_IP, servers, tcp_ok

from controller.secgroup import hooks
from flatnet.secgroup import SgNic


async def test_api_changes_are_enforced_on_the_affected_host_and_retried(env: Env, tmp_path: Path) -> None:
    a, b = await env.add_vm("a"), await env.add_vm("b")
    await env.set_addr(a, A_IP)
    await env.set_addr(b, B_IP)
    async with running_lab(tmp_path) as lab:
        host = await lab.agent(env.host, index=0)
        other = await lab.agent(None, index=1)  # a second host: not affected by anything below
        _, nic_b = await lab.vm(host.host_uuid, ip=B_IP, mac=b.mac, tap=b.tap)
        _, nic_a = await lab.vm(host.host_uuid, ip=A_IP, mac=a.mac, tap=a.tap)
        api = lab.api
        sg = await api.inv("CreateSecurityGroup", name="web")
        await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3)
        with servers(b) as srv:
            srv.tcp(22)
            assert await tcp_ok(a, B_IP, 22)
            await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic_b])
            assert not await tcp_ok(a, B_IP, 22)  # 1.0's default: ingress denied for a member
            st = await lab.state(host.host_uuid)
            assert st["appliedGeneration"] == st["wantedGeneration"] == host.secgroup.generation
            assert await lab.state(other.host_uuid) == {}
            await api.call("AddSecurityGroupRule", securityGroupUuid=sg["uuid"], rules=[
                {"type": "Ingress", "protocol": "TCP", "startPort": 22, "allowedCidr": f"{A_IP}/32"}])
            assert await tcp_ok(a, B_IP, 22)
            # the agent is unreachable: the API still succeeds, the host is behind, then retried until current
            async with lab.core.db.write() as tx:  # nothing listens on the discard port
                await tx.update("Host", {"uuid": host.host_uuid}, {"agentPort": 9})
            rule = (await api.inv("AddSecurityGroupRule", securityGroupUuid=sg["uuid"], rules=[
                {"type": "Ingress", "protocol": "UDP", "startPort": 53}]))["rules"][-1]
            st = await lab.state(host.host_uuid)
            assert st["appliedGeneration"] < st["wantedGeneration"] and st["failures"] >= 1
            async with lab.core.db.write() as tx:
                await tx.update("Host", {"uuid": host.host_uuid}, {"agentPort": host.server.port})
            assert await lab.core.services["secgroup"].retry_hosts() == 1
            st = await lab.state(host.host_uuid)
            assert st["appliedGeneration"] == st["wantedGeneration"] and st["lastError"] is None
            assert [r.protocol for r in host.secgroup.nics[0].rules] == ["TCP", "UDP"]
            await api.call("DeleteSecurityGroupRule", ruleUuids=[rule["uuid"]])
            # remote group: A's group is allowed in by B's group; membership of A's group changes B's rules
            clients = await api.inv("CreateSecurityGroup", name="clients")
            await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=clients["uuid"], l3NetworkUuid=lab.l3)
            await api.call("AddSecurityGroupRule", securityGroupUuid=clients["uuid"], rules=[
                {"type": "Ingress", "protocol": "ALL"}])
            inv = await api.inv("AddSecurityGroupRule", securityGroupUuid=sg["uuid"], rules=[
                {"type": "Ingress", "protocol": "TCP", "startPort": 2222, "remoteSecurityGroupUuid": clients["uuid"]}])
            srv.tcp(2222)
            assert not await tcp_ok(a, B_IP, 2222)
            await api.call("AddVmNicToSecurityGroup", securityGroupUuid=clients["uuid"], vmNicUuids=[nic_a])
            assert await tcp_ok(a, B_IP, 2222)
            await api.call("DeleteVmNicFromSecurityGroup", securityGroupUuid=clients["uuid"], vmNicUuids=[nic_a])
            assert not await tcp_ok(a, B_IP, 2222)
            assert len(inv["rules"]) == 2
            # removing B from its group restores 1.0's default for a NIC in no group: open
            await api.call("DeleteVmNicFromSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic_b])
            assert await tcp_ok(a, B_IP, 22) and await tcp_ok(a, B_IP, 2222)
            # back in; then the host "reconnects" after its rules were lost: the full set comes back (force)
            await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic_b])
            assert not await tcp_ok(a, B_IP, 2222)
            await env.host_cmd("nft", "delete", "table", "inet", "zstack_sg")
            host.secgroup.generation = 10_000  # an agent that kept a newer generation (e.g. a restored database)
            row = await lab.core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (host.host_uuid,))
            await hooks._host_connected(lab.core, host=dict(row))
            assert not await tcp_ok(a, B_IP, 2222) and await tcp_ok(a, B_IP, 22)
            assert host.secgroup.generation == (await lab.state(host.host_uuid))["appliedGeneration"]
        await asyncio.sleep(0)


async def test_a_host_added_to_a_new_controller_loses_the_set_its_agent_kept(env: Env, tmp_path: Path) -> None:
    """A host deleted and added again (or moved to another controller) whose agent still enforces an old set:
    the connect clears it, although this controller never pushed the host and has nothing to filter there.
    Otherwise the agent re-applies those rules to whatever NICs later get the same tap names."""
    a, b = await env.add_vm("a"), await env.add_vm("b")
    await env.set_addr(a, A_IP)
    await env.set_addr(b, B_IP)
    async with running_lab(tmp_path) as lab:
        host = await lab.agent(env.host, index=0)
        with servers(b) as srv:
            srv.tcp(22)
            assert await tcp_ok(a, B_IP, 22)
            # what an earlier controller left: B filtered with nothing allowed
            await host.secgroup.apply(7, [SgNic(tap=b.tap, mac=b.mac, ips=(B_IP,))])
            assert not await tcp_ok(a, B_IP, 22)
            row = await lab.core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (host.host_uuid,))
            await hooks._host_connected(lab.core, host=dict(row))
            assert await tcp_ok(a, B_IP, 22)
            assert host.secgroup.nics == [] and await host.secgroup.in_sync()
            st = await lab.state(host.host_uuid)
            assert st["appliedGeneration"] == st["wantedGeneration"] == host.secgroup.generation
