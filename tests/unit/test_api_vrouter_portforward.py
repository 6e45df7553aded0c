"""Port forwarding on the virtual router: 1.0's APIs, fields, rules and messages (reference virtual-router.md
§2), the SNAT requirement of Eip and PortForwarding, and the rules in the router's desired state. The VM NICs
are rows written straight into the database (no host in the unit tier); with no router running, the APIs
only change records. Every refusal is checked to change nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from apiclient import Api

from controller.api.http import CORE
from controller.util import new_uuid, now_iso
from controller.vrouter_provider.router import desired_state

MiB = 1 << 20


async def _env(api: Api) -> dict[str, Any]:
    zone = await api.inv("CreateZone", name="z")
    l2 = await api.inv("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
    nets = {}
    for name, net in (("pub", "192.168.77"), ("guest", "10.100.0"), ("guest2", "10.102.0"), ("nosnat", "10.101.0"),
                      ("pub2", "192.168.78")):
        l3 = await api.inv("CreateL3Network", name=name, l2NetworkUuid=l2["uuid"])
        await api.inv("AddIpRange", l3NetworkUuid=l3["uuid"], name="r", startIp=f"{net}.10", endIp=f"{net}.20",
                      netmask="255.255.255.0", gateway=f"{net}.1")
        nets[name] = l3["uuid"]
    [vr] = await api.query("QueryNetworkServiceProvider", ("type", "=", "VirtualRouter"))
    for l3 in (nets["guest"], nets["guest2"]):
        await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=l3,
                       networkServices={vr["uuid"]: ["SNAT", "Eip", "PortForwarding"]})
    return {"zone": zone["uuid"], "vr": vr["uuid"], **nets}


async def _nic(api: Api, l3: str, ip: str, *, state: str = "Stopped", vm_type: str = "UserVm",
               meta: str | None = None, vm: str | None = None, device: int = 0) -> str:
    db = api.client.app[CORE].db
    nic, now = new_uuid(), now_iso()
    async with db.write() as tx:
        if vm is None:
            vm = new_uuid()
            cur = await tx.execute("INSERT INTO VmInternalId (vmInstanceUuid) VALUES (?)", (vm,))
            await tx.insert("VmInstance", {"uuid": vm, "name": "vm", "memorySize": 1, "cpuNum": 1, "cpuSpeed": 1,
                                           "state": state, "type": vm_type, "internalId": cur.lastrowid,
                                           "createDate": now, "lastOpDate": now})
        await tx.insert("VmNic", {"uuid": nic, "vmInstanceUuid": vm, "l3NetworkUuid": l3, "ip": ip,
                                  "mac": "fa:" + ":".join(nic[i:i + 2] for i in range(0, 10, 2)),
                                  "netmask": "255.255.255.0",
                                  "gateway": ip.rsplit(".", 1)[0] + ".1", "metaData": meta,
                                  "internalName": f"vnic9.{device}", "deviceId": device, "createDate": now,
                                  "lastOpDate": now})
    return nic


async def _snapshot(api: Api) -> tuple[Any, ...]:
    return (await api.query("QueryPortForwardingRule"), await api.query("QueryVip"), await api.query("QueryEip"))


async def _refused(api: Api, name: str, status: int, code: str, text: str, /, **params: Any) -> None:
    """``name`` is refused with ``status``/``code``, a message containing ``text``, and nothing changed."""
    before = await _snapshot(api)
    s, body = await api.raw(name, **params)
    assert s == status and body["error"]["code"] == code and text in body["error"]["details"], (name, params, s,
                                                                                                 body)
    assert await _snapshot(api) == before, (name, params)


async def test_create_defaults_fields_and_port_checks(api: Api) -> None:
    env = await _env(api)
    vip = await api.inv("CreateVip", name="v", l3NetworkUuid=env["pub"], requiredIp="192.168.77.15")
    nic = await _nic(api, env["guest"], "10.100.0.12")
    one = await api.inv("CreatePortForwardingRule", name="ssh", vipUuid=vip["uuid"], vipPortStart=2222,
                        privatePortStart=22, protocolType="TCP", vmNicUuid=nic, description="d")
    assert {k: one[k] for k in ("name", "description", "vipUuid", "vipIp", "guestIp", "vmNicUuid", "vipPortStart",
                                "vipPortEnd", "privatePortStart", "privatePortEnd", "protocolType", "state",
                                "allowedCidr")} == {
        "name": "ssh", "description": "d", "vipUuid": vip["uuid"], "vipIp": "192.168.77.15", "guestIp": "10.100.0.12",
        "vmNicUuid": nic, "vipPortStart": 2222, "vipPortEnd": 2222, "privatePortStart": 22, "privatePortEnd": 22,
        "protocolType": "TCP", "state": "Enabled", "allowedCidr": None}
    assert one["createDate"] and one["lastOpDate"]
    rng = await api.inv("CreatePortForwardingRule", name="r", vipUuid=vip["uuid"], vipPortStart=8000,
                        vipPortEnd=8009, privatePortStart=9000, protocolType="UDP", allowedCidr="203.0.113.0/24")
    assert (rng["privatePortStart"], rng["privatePortEnd"], rng["vmNicUuid"], rng["allowedCidr"]) == (
        9000, 9009, None, "203.0.113.0/24")   # private end := private start + the VIP range's size
    same = await api.inv("CreatePortForwardingRule", name="s", vipUuid=vip["uuid"], vipPortStart=100,
                         vipPortEnd=110, protocolType="TCP")
    assert (same["privatePortStart"], same["privatePortEnd"]) == (100, 110)   # 1.0: private := vip
    [v] = await api.query("QueryVip", ("uuid", "=", vip["uuid"]))
    assert v["useFor"] == "PortForwarding" and v["peerL3NetworkUuid"] == env["guest"]
    assert v["serviceProvider"] == "VirtualRouter"
    base = {"name": "x", "vipUuid": vip["uuid"], "protocolType": "TCP"}
    for over, field, text in (
            ({"vipPortStart": 0}, "vipPortStart", ""), ({"vipPortStart": 65536}, "vipPortStart", ""),
            ({"vipPortStart": 5000, "vipPortEnd": 70000}, "vipPortEnd", ""),
            ({"vipPortStart": 5000, "privatePortStart": 0}, "privatePortStart", ""),
            ({"vipPortStart": 5000, "vipPortEnd": 4000}, "vipPortEnd", "is below vipPortStart 5000"),
            ({"vipPortStart": 5000, "privatePortStart": 60, "privatePortEnd": 50}, "privatePortEnd",
             "is below privatePortStart 60"),
            ({"vipPortStart": 5000, "vipPortEnd": 5010, "privatePortStart": 60, "privatePortEnd": 65},
             "privatePortEnd", "the port range size must match; vip range[5000, 5010]'s size doesn't match "
                               "range[60, 65]'s size"),
            ({"vipPortStart": 5000, "vipPortEnd": 5010, "privatePortStart": 65530}, "privatePortStart",
             "beyond 65535"),
            ({"vipPortStart": 5000, "protocolType": "ICMP"}, "protocolType", "TCP"),
            ({"vipPortStart": 5000, "allowedCidr": "10.0.0.0/33"}, "allowedCidr", "invalid CIDR[10.0.0.0/33]"),
            ({"vipPortStart": 5000, "allowedCidr": "nope"}, "allowedCidr", "invalid CIDR[nope]"),
            ({"vipPortStart": 5000, "allowedCidr": "10.0.0.5/24"}, "allowedCidr", "e.g. 10.0.0.0/24"),
            ({"vipPortStart": 5000, "allowedCidr": "10.0.0.5"}, "allowedCidr", "invalid CIDR[10.0.0.5]"),
            # overlapping the VIP range of a rule on the same VIP and protocol (1.0's message)
            ({"vipPortStart": 2222}, "vipPortStart", f"overlaps with rule[uuid:{one['uuid']}"),
            ({"vipPortStart": 2200, "vipPortEnd": 2230}, "vipPortStart", "overlaps with rule"),
            ({"vipPortStart": 105, "vipPortEnd": 120}, "vipPortStart", f"overlaps with rule[uuid:{same['uuid']}"),
            ({"vipPortStart": 8009, "protocolType": "UDP"}, "vipPortStart", "overlaps with rule")):
        await _refused(api, "CreatePortForwardingRule", 400, "SYS.1007", text, **{**base, **over})
        _, body = await api.raw("CreatePortForwardingRule", **{**base, **over})
        assert field in body["error"]["details"], (over, body)
    # the same ports on the other protocol, and 1.0's false overlap (with the other rule's private end) are fine
    assert (await api.inv("CreatePortForwardingRule", **{**base, "vipPortStart": 2222, "protocolType": "UDP"})
            )["vipPortStart"] == 2222
    assert (await api.inv("CreatePortForwardingRule", **{**base, "vipPortStart": 2223, "privatePortStart": 2224})
            )["privatePortEnd"] == 2224
    assert len(await api.query("QueryPortForwardingRule", ("protocolType", "=", "UDP"))) == 2
    assert [r["uuid"] for r in await api.query("QueryPortForwardingRule", ("vip.ip", "=", "192.168.77.15"),
                                               ("vipPortStart", "=", "2222"), ("protocolType", "=", "TCP"))] \
        == [one["uuid"]]


async def test_vip_serves_one_service_and_one_guest_l3_and_nic_rules(api: Api) -> None:
    env = await _env(api)
    vip = await api.inv("CreateVip", name="v", l3NetworkUuid=env["pub"])
    eip_vip = await api.inv("CreateVip", name="ev", l3NetworkUuid=env["pub"])
    nic = await _nic(api, env["guest"], "10.100.0.12")
    nic2 = await _nic(api, env["guest2"], "10.102.0.12")
    pub_nic = await _nic(api, env["pub"], "192.168.77.12")
    db = api.client.app[CORE].db
    async with db.write() as tx:   # an L3 with PortForwarding but no SNAT (attached before the rule existed)
        await tx.insert("NetworkServiceL3NetworkRef", {"l3NetworkUuid": env["nosnat"],
                                                        "networkServiceProviderUuid": env["vr"],
                                                        "networkServiceType": "PortForwarding"})
    nosnat_nic = await _nic(api, env["nosnat"], "10.101.0.12")
    base = {"name": "x", "vipUuid": vip["uuid"], "protocolType": "TCP", "vipPortStart": 80}
    await _refused(api, "CreatePortForwardingRule", 404, "SYS.1003", "VmNicVO", **base, vmNicUuid="3" * 32)
    await _refused(api, "CreatePortForwardingRule", 404, "SYS.1003", "vipUuid", **{**base, "vipUuid": "4" * 32})
    await _refused(api, "CreatePortForwardingRule", 400, "SYS.1007", "is on the vip's L3 network", **base,
                   vmNicUuid=pub_nic)
    await _refused(api, "CreatePortForwardingRule", 409, "SYS.1006",
                   "has the PortForwarding service but no SNAT service of the VirtualRouter provider", **base,
                   vmNicUuid=nosnat_nic)
    rule = await api.inv("CreatePortForwardingRule", **base, vmNicUuid=nic)
    # one guest L3 per VIP
    await _refused(api, "CreatePortForwardingRule", 409, "SYS.1006",
                   f"has been serving l3Network[uuid:{env['guest']}], can't serve l3Network[uuid:{env['guest2']}]",
                   **{**base, "vipPortStart": 81}, vmNicUuid=nic2)
    # a VIP with port forwarding takes no EIP, and a VIP with an EIP takes no port forwarding
    await _refused(api, "CreateEip", 409, "SYS.1006", "has been occupied other network service entity"
                   "[PortForwarding]", name="e", vipUuid=vip["uuid"])
    await api.inv("CreateEip", name="e", vipUuid=eip_vip["uuid"], vmNicUuid=nic2)
    await _refused(api, "CreatePortForwardingRule", 409, "SYS.1006", "has been occupied other network service "
                   "entity[Eip]", **{**base, "vipUuid": eip_vip["uuid"]})
    # a Disabled VIP takes no rule
    await api.inv("ChangeVipState", uuid=vip["uuid"], stateEvent="disable")
    await _refused(api, "CreatePortForwardingRule", 409, "SYS.1006", "is Disabled, not Enabled",
                   **{**base, "vipPortStart": 90})
    await api.inv("ChangeVipState", uuid=vip["uuid"], stateEvent="enable")
    # the last rule gone, the VIP is free again (an EIP may take it)
    await api.call("DeletePortForwardingRule", uuid=rule["uuid"])
    await api.call("DeletePortForwardingRule", uuid=rule["uuid"])   # unknown uuid: success (1.0)
    [v] = await api.query("QueryVip", ("uuid", "=", vip["uuid"]))
    assert v["useFor"] is None and v["peerL3NetworkUuid"] is None and v["serviceProvider"] is None
    # deleting a VIP deletes its rules
    r2 = await api.inv("CreatePortForwardingRule", **{**base, "vipUuid": vip["uuid"]})
    await api.call("DeleteVip", uuid=vip["uuid"])
    assert await api.query("QueryPortForwardingRule", ("uuid", "=", r2["uuid"])) == []


async def test_attach_detach_state_update_and_attachable_nics(api: Api) -> None:
    env = await _env(api)
    vip = await api.inv("CreateVip", name="v", l3NetworkUuid=env["pub"])
    nic = await _nic(api, env["guest"], "10.100.0.12")
    nic_b = await _nic(api, env["guest"], "10.100.0.13", state="Running")
    nic_c = await _nic(api, env["guest2"], "10.102.0.12")
    await _nic(api, env["guest"], "10.100.0.14", state="Destroyed")      # not a candidate: not Running/Stopped
    await _nic(api, env["nosnat"], "10.101.0.12")                        # no PortForwarding service
    await _nic(api, env["pub"], "192.168.77.12")                         # the VIP's L3
    rule = await api.inv("CreatePortForwardingRule", name="r", vipUuid=vip["uuid"], vipPortStart=2222,
                         privatePortStart=22, protocolType="TCP")
    got = await api.call("GetPortForwardingAttachableVmNics", ruleUuid=rule["uuid"])
    assert {n["uuid"] for n in got["inventories"]} == {nic, nic_b, nic_c}
    await _refused(api, "DetachPortForwardingRule", 409, "SYS.1006", "has not been attached to any vm nic, can't "
                   "detach", uuid=rule["uuid"])
    att = await api.inv("AttachPortForwardingRule", ruleUuid=rule["uuid"], vmNicUuid=nic)
    assert att["vmNicUuid"] == nic and att["guestIp"] == "10.100.0.12"
    [v] = await api.query("QueryVip", ("uuid", "=", vip["uuid"]))
    assert v["peerL3NetworkUuid"] == env["guest"]
    await _refused(api, "AttachPortForwardingRule", 409, "SYS.1006", f"has been attached to vm nic[uuid:{nic}], "
                   "can't attach again", ruleUuid=rule["uuid"], vmNicUuid=nic_b)
    await _refused(api, "GetPortForwardingAttachableVmNics", 409, "SYS.1006", f"has been attached to vm nic"
                   f"[uuid:{nic}] already", ruleUuid=rule["uuid"])
    # another rule on the VIP: only NICs of the VIP's guest L3, not the one already forwarding TCP port 22
    other = await api.inv("CreatePortForwardingRule", name="o", vipUuid=vip["uuid"], vipPortStart=2223,
                          privatePortStart=22, protocolType="TCP")
    got = await api.call("GetPortForwardingAttachableVmNics", ruleUuid=other["uuid"])
    assert {n["uuid"] for n in got["inventories"]} == {nic_b}
    await _refused(api, "AttachPortForwardingRule", 409, "SYS.1006", "can't serve l3Network", ruleUuid=other["uuid"],
                   vmNicUuid=nic_c)
    await _refused(api, "AttachPortForwardingRule", 404, "SYS.1003", "ruleUuid", ruleUuid="5" * 32, vmNicUuid=nic)
    det = await api.inv("DetachPortForwardingRule", uuid=rule["uuid"])
    assert det["vmNicUuid"] is None and det["guestIp"] is None
    [v] = await api.query("QueryVip", ("uuid", "=", vip["uuid"]))
    assert v["peerL3NetworkUuid"] is None and v["useFor"] == "PortForwarding"   # rules remain on it
    off = await api.inv("ChangePortForwardingRuleState", uuid=rule["uuid"], stateEvent="disable")
    assert off["state"] == "Disabled"
    await _refused(api, "AttachPortForwardingRule", 409, "SYS.1006", "is not in state of Enabled, current state is "
                   "Disabled", ruleUuid=rule["uuid"], vmNicUuid=nic)
    await _refused(api, "GetPortForwardingAttachableVmNics", 409, "SYS.1006", "is not in state of Enabled, current "
                   "state is Disabled", ruleUuid=rule["uuid"])
    await _refused(api, "ChangePortForwardingRuleState", 400, "SYS.1007", "stateEvent", uuid=rule["uuid"],
                   stateEvent="pause")
    await api.inv("ChangePortForwardingRuleState", uuid=rule["uuid"], stateEvent="enable")
    upd = await api.inv("UpdatePortForwardingRule", uuid=rule["uuid"], name="renamed", description="dd")
    assert (upd["name"], upd["description"]) == ("renamed", "dd")
    await _refused(api, "UpdatePortForwardingRule", 404, "SYS.1003", "PortForwardingRuleVO", uuid="6" * 32, name="n")
    # attached to a NIC of another guest L3 now that no rule on the VIP is attached
    assert (await api.inv("AttachPortForwardingRule", ruleUuid=rule["uuid"], vmNicUuid=nic_c))["guestIp"] == \
        "10.102.0.12"


async def test_eip_and_port_forwarding_need_snat(api: Api) -> None:
    env = await _env(api)
    vr = env["vr"]
    for services, name in ((["Eip"], "eip"), (["PortForwarding"], "port forwarding")):
        before = (await api.query("QueryL3Network", ("uuid", "=", env["nosnat"])))[0]["networkServices"]
        s, body = await api.raw("AttachNetworkServiceToL3Network", l3NetworkUuid=env["nosnat"],
                                networkServices={vr: services})
        assert s == 409 and body["error"]["code"] == "SYS.1006", body
        assert f"When {name} is selected, snat must be selected too" in body["error"]["details"], body
        assert (await api.query("QueryL3Network", ("uuid", "=", env["nosnat"])))[0]["networkServices"] == before
    # SNAT in the same request, or attached before: fine
    await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=env["nosnat"],
                   networkServices={vr: ["Eip", "SNAT"]})
    await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=env["nosnat"],
                   networkServices={vr: ["PortForwarding"]})
    s, body = await api.raw("DetachNetworkServiceFromL3Network", l3NetworkUuid=env["nosnat"],
                            networkServices={vr: ["SNAT"]})
    assert s == 409 and "needs SNAT" in body["error"]["details"], body
    assert {r["networkServiceType"] for r in (await api.query("QueryL3Network", ("uuid", "=", env["nosnat"])))[0][
        "networkServices"]} == {"SNAT", "Eip", "PortForwarding"}
    await api.call("DetachNetworkServiceFromL3Network", l3NetworkUuid=env["nosnat"],
                   networkServices={vr: ["SNAT", "Eip", "PortForwarding"]})
    # an L3 whose Eip lost its SNAT (a record from before this rule): CreateEip refuses its NICs
    db = api.client.app[CORE].db
    async with db.write() as tx:
        await tx.insert("NetworkServiceL3NetworkRef", {"l3NetworkUuid": env["nosnat"],
                                                        "networkServiceProviderUuid": vr, "networkServiceType": "Eip"})
    nic = await _nic(api, env["nosnat"], "10.101.0.12")
    vip = await api.inv("CreateVip", name="v", l3NetworkUuid=env["pub"])
    await _refused(api, "CreateEip", 409, "SYS.1006", "has the Eip service but no SNAT service", name="e",
                   vipUuid=vip["uuid"], vmNicUuid=nic)


async def test_vip_must_be_on_the_routers_public_network(api: Api, tmp_path: Path) -> None:
    env = await _env(api)
    (tmp_path / "vr.qcow2").write_bytes(b"QFI\xfb")
    image = await api.inv("AddImage", name="vr", url=f"file://{tmp_path}/vr.qcow2", format="qcow2", system=True)
    await api.inv("CreateVirtualRouterOffering", name="vr", cpuNum=1, cpuSpeed=1000, memorySize=256 * MiB,
                  zoneUuid=env["zone"], managementNetworkUuid=env["pub"], imageUuid=image["uuid"])
    nic = await _nic(api, env["guest"], "10.100.0.12")
    wrong = await api.inv("CreateVip", name="w", l3NetworkUuid=env["pub2"])
    await _refused(api, "CreatePortForwardingRule", 409, "SYS.1006", f"has public network[uuid:{env['pub']}]",
                   name="x", vipUuid=wrong["uuid"], vipPortStart=80, protocolType="TCP", vmNicUuid=nic)
    await _refused(api, "CreateEip", 409, "SYS.1006", f"guestL3Network::{env['guest']}", name="x",
                   vipUuid=wrong["uuid"], vmNicUuid=nic)
    right = await api.inv("CreateVip", name="r", l3NetworkUuid=env["pub"])
    await api.inv("CreatePortForwardingRule", name="x", vipUuid=right["uuid"], vipPortStart=80, protocolType="TCP",
                  vmNicUuid=nic)


async def test_rules_in_the_routers_desired_state(api: Api) -> None:
    """What the controller pushes: Enabled rules on Enabled VIPs, attached to NICs of running VMs of the guest
    L3; the VIP once as an address of the router's public NIC."""
    env = await _env(api)
    core = api.client.app[CORE]
    pub_nic = await _nic(api, env["pub"], "192.168.77.2", vm_type="ApplianceVm", state="Running", meta="3")
    vr_uuid = (await core.db.fetchone("SELECT vmInstanceUuid FROM VmNic WHERE uuid=?", (pub_nic,)))[0]
    await _nic(api, env["guest"], "10.100.0.1", vm=vr_uuid, meta="4", device=1)
    vr = {"uuid": vr_uuid, "guestL3NetworkUuid": env["guest"], "publicNetworkUuid": env["pub"],
          "defaultRouteL3NetworkUuid": env["pub"]}
    running = await _nic(api, env["guest"], "10.100.0.12", state="Running")
    stopped = await _nic(api, env["guest"], "10.100.0.13", state="Stopped")
    vip = await api.inv("CreateVip", name="v", l3NetworkUuid=env["pub"], requiredIp="192.168.77.15")
    ssh = await api.inv("CreatePortForwardingRule", name="ssh", vipUuid=vip["uuid"], vipPortStart=2222,
                        privatePortStart=22, protocolType="TCP", vmNicUuid=running, allowedCidr="192.168.77.0/24")
    await api.inv("CreatePortForwardingRule", name="dns", vipUuid=vip["uuid"], vipPortStart=5300, vipPortEnd=5301,
                  privatePortStart=53, protocolType="UDP", vmNicUuid=running)
    await api.inv("CreatePortForwardingRule", name="stopped", vipUuid=vip["uuid"], vipPortStart=3000,
                  protocolType="TCP", vmNicUuid=stopped)
    await api.inv("CreatePortForwardingRule", name="detached", vipUuid=vip["uuid"], vipPortStart=4000,
                  protocolType="TCP")
    state = await desired_state(core, vr, 5)
    macs = {r["l3NetworkUuid"]: r["mac"] for r in await core.db.fetchall(
        "SELECT l3NetworkUuid, mac FROM VmNic WHERE vmInstanceUuid=?", (vr_uuid,))}
    common = {"vipIp": "192.168.77.15", "guestIp": "10.100.0.12", "publicNicMac": macs[env["pub"]],
              "privateNicMac": macs[env["guest"]]}
    assert state["pfs"] == [
        {**common, "protocol": "tcp", "vipPortStart": 2222, "vipPortEnd": 2222, "privatePortStart": 22,
         "privatePortEnd": 22, "allowedCidr": "192.168.77.0/24"},
        {**common, "protocol": "udp", "vipPortStart": 5300, "vipPortEnd": 5301, "privatePortStart": 53,
         "privatePortEnd": 54, "allowedCidr": None}]
    assert state["vips"] == [{"ip": "192.168.77.15", "prefix": 24, "nicMac": macs[env["pub"]]}]
    await api.inv("ChangePortForwardingRuleState", uuid=ssh["uuid"], stateEvent="disable")
    assert [p["vipPortStart"] for p in (await desired_state(core, vr, 6))["pfs"]] == [5300]
    await api.inv("ChangeVipState", uuid=vip["uuid"], stateEvent="disable")
    state = await desired_state(core, vr, 7)
    assert "pfs" not in state and "vips" not in state


async def test_concurrent_eip_and_rule_on_one_vip_one_wins(api: Api) -> None:
    env = await _env(api)
    for _ in range(3):
        vip = await api.inv("CreateVip", name="v", l3NetworkUuid=env["pub"])
        (s1, b1), (s2, b2) = await asyncio.gather(
            api.raw("CreateEip", name="e", vipUuid=vip["uuid"]),
            api.raw("CreatePortForwardingRule", name="r", vipUuid=vip["uuid"], vipPortStart=80, protocolType="TCP"))
        assert sorted((s1, s2)) == [200, 409], (b1, b2)
        [v] = await api.query("QueryVip", ("uuid", "=", vip["uuid"]))
        assert v["useFor"] == ("Eip" if s1 == 200 else "PortForwarding")
        assert len(await api.query("QueryEip", ("vipUuid", "=", vip["uuid"]))) + len(
            await api.query("QueryPortForwardingRule", ("vipUuid", "=", vip["uuid"]))) == 1
