"""The flat provider's controller side against the real controller and real in-process agents (libvirt test
driver): WHICH ``/flatnet/*`` commands the controller sends, to which host, in which order and with which
fields. The simulated agents have no data plane (it needs root and a bridge; it has its own functional
tests), so ``/flatnet/*`` calls are recorded at the agent-client boundary and answered with an empty
success; every other call goes to the real agent. The real behaviour is proven in tests/e2e/test_flatnet.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_controller_compute import Env

from controller.compute.connect import connect
from kvmagent.contract import flatnet as fc

SEED_USERDATA = ("userdata::users:\\n - name: test\\n gecos: test\\n groups: users\\n sudo: ALL=(ALL) NOPASSWD:ALL\\n"
                 " shell: /bin/bash\\n lock_passwd: false")


class Recorder:
    def __init__(self, agents: Any) -> None:
        self.agents, self.real = agents, agents.call
        self.calls: list[tuple[str, str, Any]] = []  # (host uuid, path, cmd)

    async def call(self, host: dict[str, Any], cmd: Any, *, timeout: float | None = None) -> Any:
        self.calls.append((host["uuid"], cmd.PATH, cmd))
        if cmd.PATH.startswith("/flatnet/"):
            return cmd.Reply()
        return await self.real(host, cmd, timeout=timeout)

    def flat(self, path: str | None = None) -> list[tuple[str, Any]]:
        return [(h, c) for h, p, c in self.calls if p.startswith("/flatnet/") and (path is None or p == path)]


@pytest.fixture
async def rec(env: Env) -> AsyncIterator[Recorder]:
    agents = env.core.services["agents"]
    r = Recorder(agents)
    agents.call = r.call
    flat = await env.core.db.fetchone("SELECT uuid FROM NetworkServiceProvider WHERE type='Flat'")
    await env.call("AttachNetworkServiceToL3Network", l3NetworkUuid=env.ids["l3"],
                   networkServices={flat[0]: ["DHCP", "Userdata"]})
    await env.call("AddDnsToL3Network", l3NetworkUuid=env.ids["l3"], dns="10.10.0.2")
    yield r
    agents.call = r.real


async def _dhcp_tag(env: Env) -> str:
    rows = await env.core.db.fetchall("SELECT tag, inherent FROM SystemTag WHERE resourceUuid=? AND tag LIKE "
                                      "'flatNetwork::DhcpServer::%'", (env.ids["l3"],))
    assert len(rows) == 1 and rows[0]["inherent"] == 1, [dict(r) for r in rows]
    return str(rows[0]["tag"])


async def test_dhcp_server_ip_allocated_once_on_attach(env: Env, rec: Recorder) -> None:
    tag = await _dhcp_tag(env)
    _, _, ip, _, ip_uuid = tag.split("::")
    used = await env.core.db.fetchone("SELECT ip, usedFor FROM UsedIp WHERE uuid=?", (ip_uuid,))
    assert used["ip"] == ip == "10.10.0.10" and used["usedFor"] == "FlatDhcpServer"
    status, body = await env.create_vm("vm1")
    assert status == 200, body
    assert body["inventory"]["vmNics"][0]["ip"] != ip
    assert await _dhcp_tag(env) == tag  # not re-allocated by the start


async def test_start_applies_dhcp_and_userdata_before_the_domain(env: Env, rec: Recorder) -> None:
    status, body = await env.create_vm("My_VM 1", systemTags=[SEED_USERDATA, "sshkey::ssh-ed25519 AAAAC3 k@x"])
    assert status == 200, body
    vm, nic = body["inventory"], body["inventory"]["vmNics"][0]
    paths = [p for h, p, _ in rec.calls if h == vm["hostUuid"]]
    assert paths.index("/flatnet/dhcp/apply") < paths.index("/flatnet/userdata/apply") < paths.index("/vm/start")
    (host, apply), = rec.flat("/flatnet/dhcp/apply")
    assert host == vm["hostUuid"] and not apply.rebuild
    l3 = apply.l3s[0]
    assert (l3.l3NetworkUuid, l3.bridgeName, l3.physicalInterface, l3.dhcpServerIp, l3.netmask, l3.gateway,
            l3.dns, l3.antiSpoofing) == (env.ids["l3"], "br_eth0", "eth0", "10.10.0.10", "255.255.252.0",
                                         "10.10.0.1", ["10.10.0.2"], True)
    (n,) = apply.nics
    assert (n.vmUuid, n.mac, n.ip, n.netmask, n.gateway, n.hostname, n.isDefaultL3Network, n.tapName) == (
        vm["uuid"], nic["mac"], nic["ip"], "255.255.252.0", "10.10.0.1", "my-vm-1", True, nic["internalName"])
    (_, ud), = rec.flat("/flatnet/userdata/apply")
    assert ud.userdata == SEED_USERDATA.removeprefix("userdata::") and ud.sshKeys == ["ssh-ed25519 AAAAC3 k@x"]
    assert (ud.vmIp, ud.hostname, ud.instanceId, ud.l3NetworkUuid) == (nic["ip"], "my-vm-1", vm["uuid"],
                                                                      env.ids["l3"])
    rec.calls.clear()
    await env.inv("StopVmInstance", uuid=vm["uuid"])
    rel = rec.flat("/flatnet/dhcp/release")
    assert [(h, [(r.l3NetworkUuid, r.mac) for r in c.nics]) for h, c in rel] == [
        (vm["hostUuid"], [(env.ids["l3"], nic["mac"])])]
    assert [(h, c.vmUuid) for h, c in rec.flat("/flatnet/userdata/release")] == [(vm["hostUuid"], vm["uuid"])]


async def test_tag_changes_pushed_to_the_running_vm_with_warnings(env: Env, rec: Recorder) -> None:
    _, body = await env.create_vm("vm1")
    vm = body["inventory"]
    rec.calls.clear()
    body = await env.call("CreateSystemTag", resourceType="VmInstanceVO", resourceUuid=vm["uuid"], tag=SEED_USERDATA)
    assert any("#cloud-config" in w for w in body["warnings"]), body
    (host, ud), = rec.flat("/flatnet/userdata/apply")
    assert host == vm["hostUuid"] and ud.userdata == SEED_USERDATA.removeprefix("userdata::")
    good = "userdata::#cloud-config\\nusers:\\n  - name: test\\n    groups: users"
    body = await env.call("UpdateSystemTag", uuid=body["inventory"]["uuid"], tag=good)
    assert "warnings" not in body, body
    assert rec.flat("/flatnet/userdata/apply")[-1][1].userdata == good.removeprefix("userdata::")
    await env.call("DeleteTag", uuid=body["inventory"]["uuid"])
    assert rec.flat("/flatnet/userdata/apply")[-1][1].userdata is None
    status, body = await env.raw("CreateSystemTag", resourceType="L3NetworkVO", resourceUuid=env.ids["l3"],
                                 tag=SEED_USERDATA)
    assert status == 400 and "no system tag matches" in body["error"]["details"], body


async def test_reconnect_rebuilds_with_hostnames_and_userdata(env: Env, rec: Recorder) -> None:
    vms = []
    for i in range(3):
        status, body = await env.create_vm(f"vm{i}", systemTags=[f"hostname::web-{i}"])
        assert status == 200, body
        vms.append(body["inventory"])
    await env.inv("StopVmInstance", uuid=vms[2]["uuid"])
    await env.call("UpdateGlobalConfig", category="flatNetwork", name="antiSpoofing", value="false")
    host = vms[0]["hostUuid"]
    rec.calls.clear()
    await connect(env.core, host, env.url)
    (h, apply), = rec.flat("/flatnet/dhcp/apply")
    assert h == host and apply.rebuild and [x.antiSpoofing for x in apply.l3s] == [False]
    mine = {v["uuid"]: v for v in vms[:2] if v["hostUuid"] == host}
    assert {n.vmUuid: (n.ip, n.hostname) for n in apply.nics} == {
        u: (v["vmNics"][0]["ip"], f"web-{vms.index(v)}") for u, v in mine.items()}
    assert sorted(c.vmUuid for _, c in rec.flat("/flatnet/userdata/apply")) == sorted(mine)
    # per-L3 override wins over the global config
    await env.call("CreateSystemTag", resourceType="L3NetworkVO", resourceUuid=env.ids["l3"],
                   tag="flatNetwork::antiSpoofing::true")
    rec.calls.clear()
    await connect(env.core, host, env.url)
    assert [x.antiSpoofing for x in rec.flat("/flatnet/dhcp/apply")[0][1].l3s] == [True]
    status, body = await env.raw("CreateSystemTag", resourceType="L3NetworkVO", resourceUuid=env.ids["l3"],
                                 tag="flatNetwork::antiSpoofing::maybe")
    assert status == 400 and "'maybe'" in body["error"]["details"], body


async def test_out_of_band_stop_releases_on_that_host(env: Env, rec: Recorder) -> None:
    from controller.compute.tracer import apply_report

    _, body = await env.create_vm("vm1")
    vm = body["inventory"]
    rec.calls.clear()
    assert await apply_report(env.core, vm["hostUuid"], vm["uuid"], "Stopped") == "Stopped"
    assert [h for h, _ in rec.flat("/flatnet/dhcp/release")] == [vm["hostUuid"]]
    other = next(h["uuid"] for h in await env.hosts() if h["uuid"] != vm["hostUuid"])
    rec.calls.clear()
    assert await apply_report(env.core, other, vm["uuid"], "Running") == "Running"
    assert [(h, c.nics[0].ip) for h, c in rec.flat("/flatnet/dhcp/apply")] == [(other, vm["vmNics"][0]["ip"])]
    assert [h for h, _ in rec.flat("/flatnet/userdata/apply")] == [other]


def test_controller_and_agent_share_one_userdata_judgement() -> None:
    """The controller's warnings and the agent's rendering decode user data with the same code (``zsutil``),
    not through a re-export of ``flatnet`` by the wire contract."""
    from controller.flatnet_provider import hooks
    from flatnet import userdata
    from zsutil import userdata as shared

    assert hooks.userdata_warnings is shared.userdata_warnings and hooks.decode_minified is shared.decode_minified
    assert userdata.decode_minified is shared.decode_minified
    assert not hasattr(fc, "decode_minified") and not hasattr(fc, "userdata_warnings")


async def test_two_userdata_l3s_serve_the_vm_on_both(env: Env, rec: Recorder) -> None:
    """The seed's ``l3NetworkUuids=A,B defaultL3NetworkUuid=B``: user data for B's NIC, also served on A's
    (the guest's metadata route goes through its first NIC); an L3 without Flat DHCP is not listed."""
    flat = (await env.core.db.fetchone("SELECT uuid FROM NetworkServiceProvider WHERE type='Flat'"))[0]
    l2 = (await env.core.db.fetchone("SELECT l2NetworkUuid FROM L3Network WHERE uuid=?", (env.ids["l3"],)))[0]
    a = (await env.inv("CreateL3Network", name="a", l2NetworkUuid=l2))["uuid"]
    await env.call("AddIpRange", l3NetworkUuid=a, name="ra", startIp="10.20.0.10", endIp="10.20.0.200",
                   netmask="255.255.255.0", gateway="10.20.0.1")
    await env.call("AttachNetworkServiceToL3Network", l3NetworkUuid=a, networkServices={flat: ["DHCP", "Userdata"]})
    c = (await env.inv("CreateL3Network", name="c", l2NetworkUuid=l2))["uuid"]
    await env.call("AddIpRange", l3NetworkUuid=c, name="rc", startIp="10.30.0.10", endIp="10.30.0.200",
                   netmask="255.255.255.0", gateway="10.30.0.1")
    await env.call("AttachNetworkServiceToL3Network", l3NetworkUuid=c, networkServices={flat: ["Userdata"]})
    status, body = await env.raw("CreateVmInstance", name="two", instanceOfferingUuid=env.ids["offering"],
                                 imageUuid=env.ids["image"], l3NetworkUuids=[a, env.ids["l3"], c],
                                 defaultL3NetworkUuid=env.ids["l3"], systemTags=[SEED_USERDATA])
    assert status == 200, body
    nics = {n["l3NetworkUuid"]: n for n in body["inventory"]["vmNics"]}
    (_, ud), = rec.flat("/flatnet/userdata/apply")
    assert (ud.l3NetworkUuid, ud.vmIp) == (env.ids["l3"], nics[env.ids["l3"]]["ip"])
    assert [(x.l3NetworkUuid, x.ip) for x in ud.addresses] == [(a, nics[a]["ip"])]


async def test_reconnect_during_a_reboot_keeps_serving_the_rebooting_vm(env: Env, rec: Recorder) -> None:
    """The host reconnects while a VM on it reboots (state Rebooting): the rebuild still carries the VM's NIC and
    user data. It once left them out, which removed the L3's namespace on a host with no other VM there: the
    rebooted guest got no metadata (seen on nspawn hosts as an SSH key never installed)."""
    _, body = await env.create_vm("vm1")
    vm = body["inventory"]
    agents = env.core.services["agents"]
    entered, gate = asyncio.Event(), asyncio.Event()

    async def held_reboot(host: dict[str, Any], cmd: Any, *, timeout: float | None = None) -> Any:
        if cmd.PATH == "/vm/reboot":
            entered.set()
            await gate.wait()
        return await rec.call(host, cmd, timeout=timeout)

    agents.call = held_reboot
    reboot = asyncio.create_task(env.inv("RebootVmInstance", uuid=vm["uuid"]))
    await asyncio.wait_for(entered.wait(), 30)
    assert (await env.core.db.fetchone("SELECT state FROM VmInstance WHERE uuid=?", (vm["uuid"],)))[0] == "Rebooting"
    rec.calls.clear()
    await connect(env.core, vm["hostUuid"], env.url)
    gate.set()
    assert (await reboot)["state"] == "Running"
    (_, apply), = rec.flat("/flatnet/dhcp/apply")
    assert apply.rebuild and [n.vmUuid for n in apply.nics] == [vm["uuid"]], apply
    assert [c.vmUuid for _, c in rec.flat("/flatnet/userdata/apply")] == [vm["uuid"]]
    assert rec.flat("/flatnet/dhcp/release") == [] and rec.flat("/flatnet/userdata/release") == []
