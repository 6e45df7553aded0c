"""Security-group APIs (reference security-groups.md §2): every rule and message, the inventories, the query
expansions, the rule set a host gets, and which hosts a change affects (their generations)."""

from __future__ import annotations

from typing import Any

import pytest
from test_api_support import _core, cluster, network, provider

from controller.secgroup import hooks
from controller.secgroup.rules import host_rule_set
from controller.util import new_uuid, now_iso

SG_KEYS = {"uuid", "name", "description", "state", "createDate", "lastOpDate", "rules", "attachedL3NetworkUuids"}
RULE_KEYS = {"uuid", "securityGroupUuid", "type", "protocol", "startPort", "endPort", "state", "allowedCidr",
             "remoteSecurityGroupUuid", "createDate", "lastOpDate"}
SG_TABLES = ("SecurityGroup", "SecurityGroupRule", "SecurityGroupL3NetworkRef", "VmNicSecurityGroupRef",
             "SecurityGroupHostState")


async def _counts(api: Any) -> dict[str, int]:
    db = _core(api).db
    return {t: (await db.fetchone(f"SELECT COUNT(*) FROM {t}"))[0] for t in SG_TABLES}


async def refused(api: Any, api_name: str, status: int, code: str, /, *needles: str, **params: Any) -> str:
    before = await _counts(api)
    got, body = await api.raw(api_name, **params)
    assert got == status and body["error"]["code"] == code, (got, body)
    for n in needles:
        assert n in body["error"]["details"], (n, body["error"]["details"])
    assert await _counts(api) == before, f"{api_name} wrote something although it was refused"
    return str(body["error"]["details"])


async def _sg(api: Any, name: str = "sg1") -> dict[str, Any]:
    return await api.inv("CreateSecurityGroup", name=name, description="web tier")


class Lab:
    def __init__(self, api: Any) -> None:
        self.api = api
        self.core = _core(api)
        self.n = 0

    async def setup(self) -> None:
        z, self.l2, self.l3 = await network(self.api)
        self.zone = z["uuid"]
        self.cluster = (await cluster(self.api, self.zone))["uuid"]
        sgp = await provider(self.api, "SecurityGroup")
        await self.api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=self.l3["uuid"],
                            networkServices={sgp["uuid"]: ["SecurityGroup"]})
        self.l3b = await self.api.inv("CreateL3Network", name="l3-b", l2NetworkUuid=self.l2["uuid"])
        self.hosts = [await self.host(f"10.0.0.{i}") for i in (1, 2, 3)]

    async def host(self, ip: str, status: str = "Connecting") -> str:
        u = new_uuid()
        async with self.core.db.write() as tx:
            await tx.insert("Host", {"uuid": u, "name": ip, "zoneUuid": self.zone, "clusterUuid": self.cluster,
                                     "managementIp": ip, "status": status, "createDate": now_iso(),
                                     "lastOpDate": now_iso()})
        return u

    async def vm(self, host: str | None, ip: str, *, l3: str | None = None, state: str = "Running") -> tuple[str, str]:
        self.n += 1
        vm, nic = new_uuid(), new_uuid()
        async with self.core.db.write() as tx:
            await tx.insert("VmInstance", {"uuid": vm, "name": f"vm{self.n}", "internalId": 1000 + self.n,
                                           "memorySize": 1, "cpuNum": 1, "cpuSpeed": 1, "hostUuid": host,
                                           "state": state, "createDate": now_iso(), "lastOpDate": now_iso()})
            await tx.insert("VmNic", {"uuid": nic, "vmInstanceUuid": vm, "l3NetworkUuid": l3 or self.l3["uuid"],
                                      "ip": ip, "mac": f"fa:16:3e:00:00:{self.n:02x}",
                                      "internalName": f"vnic{1000 + self.n}.0", "deviceId": 0,
                                      "createDate": now_iso(), "lastOpDate": now_iso()})
        return vm, nic

    async def generations(self) -> dict[str, int]:
        rows = await self.core.db.fetchall("SELECT hostUuid, wantedGeneration FROM SecurityGroupHostState")
        return {r[0]: r[1] for r in rows}


@pytest.fixture
async def lab(api: Any) -> Lab:
    lab = Lab(api)
    await lab.setup()
    return lab


async def test_create_update_state_delete(api: Any) -> None:
    sg = await _sg(api)
    assert set(sg) == SG_KEYS
    assert (sg["name"], sg["description"], sg["state"], sg["rules"], sg["attachedL3NetworkUuids"]) == (
        "sg1", "web tier", "Enabled", [], [])
    assert "internalId" not in sg
    up = await api.inv("UpdateSecurityGroup", uuid=sg["uuid"], name="sg2")
    assert (up["name"], up["description"]) == ("sg2", "web tier")
    assert (await api.inv("ChangeSecurityGroupState", uuid=sg["uuid"], stateEvent="disable"))["state"] == "Disabled"
    assert (await api.inv("ChangeSecurityGroupState", uuid=sg["uuid"], stateEvent="enable"))["state"] == "Enabled"
    await api.call("DeleteSecurityGroup", uuid=sg["uuid"])
    assert await api.query("QuerySecurityGroup", ("uuid", "=", sg["uuid"])) == []
    await api.call("DeleteSecurityGroup", uuid=sg["uuid"])  # unknown uuid: success (1.0)
    await refused(api, "UpdateSecurityGroup", 404, "SYS.1003", sg["uuid"], uuid=sg["uuid"], name="x")
    await refused(api, "CreateSecurityGroup", 400, "SYS.1007", "name", name="")
    await refused(api, "ChangeSecurityGroupState", 400, "SYS.1007", "stateEvent", uuid=sg["uuid"], stateEvent="on")


def _r(**kw: Any) -> dict[str, Any]:
    return {"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22, **kw}


@pytest.mark.parametrize("rule,needle", [
    ({"protocol": "TCP", "startPort": 1}, "rule type can not be null"),
    (_r(type="ingress"), "unknown rule type[ingress], rule can only be Ingress/Egress"),
    ({"type": "Ingress", "startPort": 1}, "protocol can not be null"),
    (_r(protocol="GRE"), "invalid protocol[GRE]. Valid protocols are [TCP, UDP, ICMP, ALL]"),
    (_r(startPort=None), "startPort can not be null"),
    (_r(startPort=-1), "invalid startPort[-1]. Valid range is [0, 65535]"),
    (_r(startPort=65536), "invalid startPort[65536]. Valid range is [0, 65535]"),
    (_r(endPort=70000), "invalid endPort[70000]. Valid range is [0, 65535]"),
    (_r(protocol="ICMP", startPort=256), "invalid ICMP type[256]. Valid type is [-1, 255]"),
    (_r(protocol="ICMP", startPort=8, endPort=4), "invalid ICMP code[4]. Valid range is [-1, 3]"),
    (_r(allowedCidr="10.0.0.0/33"), "invalid CIDR[10.0.0.0/33]"),
    (_r(allowedCidr="10.0.0.1"), "invalid CIDR[10.0.0.1]"),
    (_r(protocol="ALL", startPort=22), "protocol ALL takes no ports"),
    (_r(allowedCidr="10.0.0.0/8", remoteSecurityGroupUuid="a" * 32), "cannot both be set"),
])
async def test_rule_checks(api: Any, rule: dict[str, Any], needle: str) -> None:
    sg = await _sg(api)
    details = await refused(api, "AddSecurityGroupRule", 400, "SYS.1007", needle, "rule dump: {",
                            securityGroupUuid=sg["uuid"], rules=[_r(), rule])
    assert details.index(needle) < details.index("rule dump")


async def test_rules_are_normalised_as_1_0_except_icmp(api: Any) -> None:
    sg, other = await _sg(api), await _sg(api, "other")
    inv = await api.inv("AddSecurityGroupRule", securityGroupUuid=sg["uuid"], rules=[
        _r(startPort=2000, endPort=1000),
        _r(protocol="UDP", startPort=53, endPort=None, allowedCidr="192.168.0.1/0"),
        _r(protocol="ICMP", startPort=8, endPort=0, type="Egress"),
        _r(protocol="ALL", startPort=None, endPort=None),
        _r(remoteSecurityGroupUuid=other["uuid"]),
    ])
    assert set(inv) == SG_KEYS
    got = [(r["type"], r["protocol"], r["startPort"], r["endPort"], r["allowedCidr"], r["remoteSecurityGroupUuid"])
           for r in inv["rules"]]
    assert got == [
        ("Ingress", "TCP", 1000, 2000, "0.0.0.0/0", None),
        ("Ingress", "UDP", 53, 53, "192.168.0.1/0", None),
        ("Egress", "ICMP", 8, 0, "0.0.0.0/0", None),  # 1.0 stored 0/8 (echo reply): not copied
        ("Ingress", "ALL", -1, -1, "0.0.0.0/0", None),
        ("Ingress", "TCP", 22, 22, None, other["uuid"]),
    ]
    assert all(set(r) == RULE_KEYS and r["state"] == "Enabled" for r in inv["rules"])
    [q] = await api.query("QuerySecurityGroupRule", ("securityGroup.name", "=", "sg1"), ("protocol", "=", "ICMP"))
    assert q["startPort"] == 8


async def test_add_rule_refusals(api: Any) -> None:
    sg = await _sg(api)
    await refused(api, "AddSecurityGroupRule", 400, "SYS.1007", "rules", securityGroupUuid=sg["uuid"], rules=[])
    await refused(api, "AddSecurityGroupRule", 404, "SYS.1003", "securityGroupUuid", securityGroupUuid="b" * 32,
                  rules=[_r()])
    await refused(api, "AddSecurityGroupRule", 404, "SYS.1003", "remoteSecurityGroupUuid",
                  securityGroupUuid=sg["uuid"], rules=[_r(), _r(remoteSecurityGroupUuid="c" * 32)])
    await refused(api, "AddSecurityGroupRule", 400, "SYS.1007", "bogus", securityGroupUuid=sg["uuid"],
                  rules=[_r(bogus=1)])


async def test_delete_rules_recomputes_every_group(lab: Lab) -> None:
    api = lab.api
    a, b = await _sg(api, "a"), await _sg(api, "b")
    ra = (await api.inv("AddSecurityGroupRule", securityGroupUuid=a["uuid"], rules=[_r(), _r(startPort=80)]))["rules"]
    rb = (await api.inv("AddSecurityGroupRule", securityGroupUuid=b["uuid"], rules=[_r()]))["rules"]
    for sg in (a, b):
        await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    _, na = await lab.vm(lab.hosts[0], "192.168.201.181")
    _, nb = await lab.vm(lab.hosts[1], "192.168.201.182")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=a["uuid"], vmNicUuids=[na])
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=b["uuid"], vmNicUuids=[nb])
    before = await lab.generations()
    body = await api.call("DeleteSecurityGroupRule", ruleUuids=["d" * 32, rb[0]["uuid"], ra[0]["uuid"]])
    assert body["inventory"]["uuid"] == b["uuid"] and body["inventory"]["rules"] == []
    after = await lab.generations()
    assert after[lab.hosts[0]] == before[lab.hosts[0]] + 1 and after[lab.hosts[1]] == before[lab.hosts[1]] + 1
    assert lab.hosts[2] not in after
    assert (await api.call("DeleteSecurityGroupRule", ruleUuids=["e" * 32]))["inventory"] is None


async def test_attach_and_detach_l3(lab: Lab) -> None:
    api, l3 = lab.api, lab.l3["uuid"]
    sg = await _sg(api)
    inv = await api.inv("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=l3)
    assert inv["attachedL3NetworkUuids"] == [l3]
    await refused(api, "AttachSecurityGroupToL3Network", 409, "SYS.1006",
                  f"security group[uuid:{sg['uuid']}] has attached to l3Network[uuid:{l3}], can't attach again",
                  securityGroupUuid=sg["uuid"], l3NetworkUuid=l3)
    await refused(api, "AttachSecurityGroupToL3Network", 409, "SYS.1006", "does not have the SecurityGroup network "
                  "service", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3b["uuid"])
    await refused(api, "AttachSecurityGroupToL3Network", 404, "SYS.1003", "l3NetworkUuid",
                  securityGroupUuid=sg["uuid"], l3NetworkUuid="f" * 32)
    await refused(api, "DetachSecurityGroupFromL3Network", 409, "SYS.1006",
                  f"security group[uuid:{sg['uuid']}] has not attached to l3Network[uuid:{lab.l3b['uuid']}], can't "
                  "detach", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3b["uuid"])
    _, nic = await lab.vm(lab.hosts[0], "192.168.201.181")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic])
    inv = await api.inv("DetachSecurityGroupFromL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=l3)
    assert inv["attachedL3NetworkUuids"] == []
    assert await api.query("QueryVmNicInSecurityGroup", ("securityGroupUuid", "=", sg["uuid"])) == []


async def test_membership(lab: Lab) -> None:
    api = lab.api
    sg = await _sg(api)
    vm, nic = await lab.vm(lab.hosts[0], "192.168.201.181")
    _, nic_b = await lab.vm(lab.hosts[0], "10.1.0.5", l3=lab.l3b["uuid"])
    await refused(api, "AddVmNicToSecurityGroup", 409, "SG.1000", f"vm nic[uuid:{nic}]", "not attached",
                  securityGroupUuid=sg["uuid"], vmNicUuids=[nic])
    await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    await refused(api, "AddVmNicToSecurityGroup", 404, "SYS.1003", f"cannot find vm nics[uuids:['{'a' * 32}']]",
                  securityGroupUuid=sg["uuid"], vmNicUuids=[nic, "a" * 32])
    await refused(api, "AddVmNicToSecurityGroup", 409, "SG.1000", nic_b, securityGroupUuid=sg["uuid"],
                  vmNicUuids=[nic, nic_b])
    await refused(api, "AddVmNicToSecurityGroup", 400, "SYS.1007", "vmNicUuids", securityGroupUuid=sg["uuid"],
                  vmNicUuids=[])
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic])
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic])  # again: no-op
    [ref] = await api.query("QueryVmNicInSecurityGroup", ("securityGroupUuid", "=", sg["uuid"]))
    assert set(ref) == {"vmNicUuid", "securityGroupUuid", "vmInstanceUuid", "createDate", "lastOpDate"}
    assert (ref["vmNicUuid"], ref["vmInstanceUuid"]) == (nic, vm)
    # query expansions (1.0: SecurityGroup vmNic.* / l3Network.* / rules.*, VmNic securityGroup.*)
    assert [s["uuid"] for s in await api.query("QuerySecurityGroup", ("vmNic.ip", "=", "192.168.201.181"))] == [
        sg["uuid"]]
    assert [s["uuid"] for s in await api.query("QuerySecurityGroup", ("l3Network.name", "=", "l3-etpz"))] == [
        sg["uuid"]]
    assert await api.query("QuerySecurityGroup", ("vmNic.ip", "=", "10.1.0.5")) == []
    [n] = await api.query("QueryVmNic", ("securityGroup.name", "=", "sg1"))
    assert n["uuid"] == nic and "securityGroup" not in n
    assert [r["vmNicUuid"] for r in await api.query("QueryVmNicInSecurityGroup", ("vmNic.ip", "=",
                                                                                "192.168.201.181"))] == [nic]
    await refused(api, "DeleteVmNicFromSecurityGroup", 404, "SYS.1003", "cannot find vm nics",
                  securityGroupUuid=sg["uuid"], vmNicUuids=["b" * 32])
    await api.call("DeleteVmNicFromSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic, nic_b])
    await api.call("DeleteVmNicFromSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic])  # not in: ok
    assert await api.query("QueryVmNicInSecurityGroup") == []


async def test_candidates(lab: Lab) -> None:
    api = lab.api
    sg = await _sg(api)
    await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    _, running = await lab.vm(lab.hosts[0], "192.168.201.181")
    _, stopped = await lab.vm(None, "192.168.201.182", state="Stopped")
    await lab.vm(None, "192.168.201.183", state="Destroyed")
    await lab.vm(lab.hosts[0], "10.1.0.5", l3=lab.l3b["uuid"])
    got = (await api.call("GetCandidateVmNicForSecurityGroup", securityGroupUuid=sg["uuid"]))["inventories"]
    assert sorted(n["uuid"] for n in got) == sorted([running, stopped])
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[running])
    got = (await api.call("GetCandidateVmNicForSecurityGroup", securityGroupUuid=sg["uuid"]))["inventories"]
    assert [n["uuid"] for n in got] == [stopped]
    await refused(api, "GetCandidateVmNicForSecurityGroup", 404, "SYS.1003", "securityGroupUuid",
                  securityGroupUuid="a" * 32)


async def test_host_rule_set(lab: Lab) -> None:
    api, h1, h2 = lab.api, lab.hosts[0], lab.hosts[1]
    web, db = await _sg(api, "web"), await _sg(api, "db")
    for sg in (web, db):
        await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    _, n1 = await lab.vm(h1, "192.168.201.181")
    _, n2 = await lab.vm(h2, "192.168.201.182")
    _, n3 = await lab.vm(None, "192.168.201.183", state="Stopped")
    _, n4 = await lab.vm(h1, "192.168.201.184")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=web["uuid"], vmNicUuids=[n1, n2, n3])
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=db["uuid"], vmNicUuids=[n4])
    await api.call("AddSecurityGroupRule", securityGroupUuid=web["uuid"], rules=[
        _r(allowedCidr="10.0.0.0/8"), _r(startPort=80, endPort=80)])
    await api.call("AddSecurityGroupRule", securityGroupUuid=db["uuid"], rules=[
        _r(startPort=5432, endPort=5432, remoteSecurityGroupUuid=web["uuid"])])
    nics = {n.vmNicUuid: n for n in await host_rule_set(lab.core, h1)}
    assert set(nics) == {n1, n4}
    a = nics[n1]
    assert (a.ingressDefaultPolicy, a.egressDefaultPolicy, a.ips, a.antiSpoofing) == (
        "deny", "accept", ["192.168.201.181"], True)
    # 1.0's same-group exemption: the members on the L3 (the stopped one too) next to a non-0.0.0.0/0 CIDR
    assert [(r.startPort, r.addresses) for r in a.rules] == [
        (22, ["10.0.0.0/8", "192.168.201.181", "192.168.201.182", "192.168.201.183"]), (80, ["0.0.0.0/0"])]
    # remote group: its members, any L3
    assert [(r.startPort, r.addresses) for r in nics[n4].rules] == [
        (5432, ["192.168.201.181", "192.168.201.182", "192.168.201.183"])]
    # a stopped VM has nothing on any host; a starting VM is counted where it starts
    _, n5 = await lab.vm(None, "192.168.201.185", state="Stopped")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=web["uuid"], vmNicUuids=[n5])
    vm5 = (await lab.core.db.fetchone("SELECT vmInstanceUuid FROM VmNic WHERE uuid=?", (n5,)))[0]
    assert n5 in {n.vmNicUuid for n in await host_rule_set(lab.core, h2, include_vm=vm5)}
    assert n5 not in {n.vmNicUuid for n in await host_rule_set(lab.core, h2)}
    assert n2 not in {n.vmNicUuid for n in await host_rule_set(lab.core, h2, exclude_vm=(await lab.core.db.fetchone(
        "SELECT vmInstanceUuid FROM VmNic WHERE uuid=?", (n2,)))[0])}
    # the default policy is a global config
    await api.call("UpdateGlobalConfig", category="securityGroup", name="ingress.defaultPolicy", value="accept")
    assert (await host_rule_set(lab.core, h1))[0].ingressDefaultPolicy == "accept"
    await refused(api, "UpdateGlobalConfig", 400, "SYS.1007", "['accept', 'deny']", category="securityGroup",
                  name="egress.defaultPolicy", value="maybe")


async def test_without_the_service_nothing_is_filtered(lab: Lab) -> None:
    api = lab.api
    sg = await _sg(api)
    await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    _, n1 = await lab.vm(lab.hosts[0], "192.168.201.181")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[n1])
    assert len(await host_rule_set(lab.core, lab.hosts[0])) == 1
    sgp = await provider(api, "SecurityGroup")
    before = await lab.generations()
    await api.call("DetachNetworkServiceFromL3Network", l3NetworkUuid=lab.l3["uuid"],
                   networkServices={sgp["uuid"]: ["SecurityGroup"]})
    assert await host_rule_set(lab.core, lab.hosts[0]) == []
    assert (await lab.generations())[lab.hosts[0]] == before[lab.hosts[0]] + 1


async def test_only_affected_hosts_are_bumped(lab: Lab) -> None:
    api, (h1, h2, h3) = lab.api, lab.hosts
    a, b, c = await _sg(api, "a"), await _sg(api, "b"), await _sg(api, "c")
    for sg in (a, b, c):
        await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    _, n1 = await lab.vm(h1, "192.168.201.181")
    _, n2 = await lab.vm(h2, "192.168.201.182")
    _, n3 = await lab.vm(h3, "192.168.201.183")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=a["uuid"], vmNicUuids=[n1])
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=b["uuid"], vmNicUuids=[n2])
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=c["uuid"], vmNicUuids=[n3])
    await api.call("AddSecurityGroupRule", securityGroupUuid=b["uuid"], rules=[_r(remoteSecurityGroupUuid=a["uuid"])])
    g0 = await lab.generations()
    await api.call("AddSecurityGroupRule", securityGroupUuid=a["uuid"], rules=[_r()])  # a's members only
    g1 = await lab.generations()
    assert (g1[h1] - g0[h1], g1[h2] - g0[h2], g1[h3] - g0[h3]) == (1, 0, 0)
    _, n4 = await lab.vm(h3, "192.168.201.184")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=a["uuid"], vmNicUuids=[n4])  # remote-group change
    g2 = await lab.generations()
    assert (g2[h1] - g1[h1], g2[h2] - g1[h2], g2[h3] - g1[h3]) == (1, 1, 1)
    await api.call("DeleteSecurityGroup", uuid=a["uuid"])  # members and the group naming it as remote
    g3 = await lab.generations()
    assert (g3[h1] - g2[h1], g3[h2] - g2[h2], g3[h3] - g2[h3]) == (1, 1, 1)
    assert (await api.inv("AddSecurityGroupRule", securityGroupUuid=b["uuid"], rules=[_r(startPort=1)]))[
        "rules"][0]["startPort"] == 1  # b's remote rule went with a


async def test_destroyed_vm_leaves_its_groups(lab: Lab) -> None:
    api = lab.api
    sg = await _sg(api)
    await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    vm, nic = await lab.vm(lab.hosts[0], "192.168.201.181")
    _, peer = await lab.vm(lab.hosts[1], "192.168.201.182")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic, peer])
    g0 = await lab.generations()
    await hooks._destroyed(lab.core, vm={"uuid": vm})
    assert [r["vmNicUuid"] for r in await api.query("QueryVmNicInSecurityGroup")] == [peer]
    assert (await lab.generations())[lab.hosts[1]] == g0[lab.hosts[1]] + 1


async def test_a_failed_push_never_fails_the_call_and_is_retried(lab: Lab) -> None:
    api = lab.api
    host = await lab.host("127.0.0.1", status="Connected")
    async with lab.core.db.write() as tx:  # nothing listens on the discard port: the agent is unreachable
        await tx.update("Host", {"uuid": host}, {"agentPort": 9, "agentToken": "t"})
    sg = await _sg(api)
    await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    _, nic = await lab.vm(host, "192.168.201.181")
    await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic])
    row = await lab.core.db.fetchone("SELECT * FROM SecurityGroupHostState WHERE hostUuid=?", (host,))
    assert row["appliedGeneration"] < row["wantedGeneration"] and row["failures"] >= 1
    assert "unreachable" in row["lastError"]
    pusher = lab.core.services["secgroup"]
    assert await pusher.behind(100) == [host]
    assert await pusher.retry_hosts() == 0
    assert "secgroup-retry" in lab.core.tasks.names()


async def test_zstack_cli_completes_and_parses_the_security_group_apis(lab: Lab) -> None:
    """zstack-cli's schema comes from the controller's OpenAPI document: the new APIs complete, ``rules`` is
    read as 1.0's Python literal and ``vmNicUuids`` as a comma list, and the parsed bodies are accepted."""
    from controller.cli.parser import parse_line
    from controller.cli.schema import from_openapi

    api = lab.api
    r = await api.client.get("/v1/openapi.json")
    schema = from_openapi(await r.json())
    names = set(schema.names())
    assert {"CreateSecurityGroup", "UpdateSecurityGroup", "DeleteSecurityGroup", "ChangeSecurityGroupState",
            "AddSecurityGroupRule", "DeleteSecurityGroupRule", "AttachSecurityGroupToL3Network",
            "DetachSecurityGroupFromL3Network", "AddVmNicToSecurityGroup", "DeleteVmNicFromSecurityGroup",
            "QuerySecurityGroup", "QuerySecurityGroupRule", "QueryVmNicInSecurityGroup",
            "GetCandidateVmNicForSecurityGroup"} <= names
    assert "QuerySecurityGroupVmNic" not in names  # the expansion views have no API of their own
    assert {"securityGroupUuid", "rules"} <= set(schema.params("AddSecurityGroupRule") or {})
    sg = await _sg(api)
    await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    cmd = parse_line(f"AddSecurityGroupRule securityGroupUuid={sg['uuid']} rules=\"[{{'type':'Ingress',"
                     "'protocol':'TCP','startPort':22,'endPort':22,'allowedCidr':'0.0.0.0/0'}]\"", schema)
    assert cmd.body["rules"] == [{"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22,
                                  "allowedCidr": "0.0.0.0/0"}]
    assert len((await api.call(cmd.api, **cmd.body))["inventory"]["rules"]) == 1
    _, n1 = await lab.vm(lab.hosts[0], "192.168.201.181")
    _, n2 = await lab.vm(lab.hosts[0], "192.168.201.182")
    cmd = parse_line(f"AddVmNicToSecurityGroup securityGroupUuid={sg['uuid']} vmNicUuids={n1},{n2}", schema)
    assert cmd.body["vmNicUuids"] == [n1, n2]
    await api.call(cmd.api, **cmd.body)
    assert len(await api.query("QueryVmNicInSecurityGroup")) == 2


async def test_host_connect_pushes_only_hosts_with_something_to_enforce_or_undo(lab: Lab) -> None:
    api, (h1, h2, _) = lab.api, lab.hosts
    sg = await _sg(api)
    await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3["uuid"])
    _, nic = await lab.vm(h1, "192.168.201.181")
    async with lab.core.db.write() as tx:
        await tx.insert("VmNicSecurityGroupRef", {"uuid": new_uuid(), "vmNicUuid": nic, "securityGroupUuid": sg["uuid"],
                                                  "vmInstanceUuid": (await tx.fetchone(
                                                      "SELECT vmInstanceUuid FROM VmNic WHERE uuid=?", (nic,)))[0],
                                                  "createDate": now_iso(), "lastOpDate": now_iso()})
    async with lab.core.db.write() as tx:  # nothing listens there: the push fails at once
        await tx.update("Host", {"uuid": h1}, {"managementIp": "127.0.0.2", "agentPort": 9, "agentToken": "t"})
    for h in (h1, h2):
        row = await lab.core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (h,))
        await hooks._host_connected(lab.core, host=dict(row))
    gens = await lab.generations()
    assert gens.get(h1) == 1 and h2 not in gens
    state = await lab.core.db.fetchone("SELECT * FROM SecurityGroupHostState WHERE hostUuid=?", (h1,))
    assert state["failures"] == 1 and state["lastError"]  # forced push tried (no agent in the unit tier)
