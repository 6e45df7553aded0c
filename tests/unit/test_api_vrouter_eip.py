"""VIP and EIP APIs on the virtual router: 1.0's rules and messages (reference virtual-router.md §2). The VM
NICs are rows written straight into the database (no host in the unit tier); with no router running, the
APIs only change records."""

from __future__ import annotations

from typing import Any

from apiclient import Api

from controller.api.http import CORE
from controller.util import new_uuid, now_iso


async def _env(api: Api) -> dict[str, Any]:
    zone = await api.inv("CreateZone", name="z")
    l2 = await api.inv("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
    pub = await api.inv("CreateL3Network", name="pub", l2NetworkUuid=l2["uuid"])
    guest = await api.inv("CreateL3Network", name="guest", l2NetworkUuid=l2["uuid"])
    plain = await api.inv("CreateL3Network", name="plain", l2NetworkUuid=l2["uuid"])
    for l3, net in ((pub, "192.168.77"), (guest, "10.100.0"), (plain, "10.101.0")):
        await api.inv("AddIpRange", l3NetworkUuid=l3["uuid"], name="r", startIp=f"{net}.10", endIp=f"{net}.20",
                      netmask="255.255.255.0", gateway=f"{net}.1")
    [vr] = await api.query("QueryNetworkServiceProvider", ("type", "=", "VirtualRouter"))
    await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=guest["uuid"],
                   networkServices={vr["uuid"]: ["SNAT", "Eip"]})
    return {"zone": zone["uuid"], "pub": pub["uuid"], "guest": guest["uuid"], "plain": plain["uuid"]}


async def _nic(api: Api, l3: str, ip: str) -> str:
    db = api.client.app[CORE].db
    vm, nic, now = new_uuid(), new_uuid(), now_iso()
    async with db.write() as tx:
        cur = await tx.execute("INSERT INTO VmInternalId (vmInstanceUuid) VALUES (?)", (vm,))
        await tx.insert("VmInstance", {"uuid": vm, "name": "vm", "memorySize": 1, "cpuNum": 1, "cpuSpeed": 1,
                                       "state": "Stopped", "internalId": cur.lastrowid, "createDate": now,
                                       "lastOpDate": now})
        await tx.insert("VmNic", {"uuid": nic, "vmInstanceUuid": vm, "l3NetworkUuid": l3, "ip": ip,
                                  "mac": "fa:00:" + ":".join(nic[i:i + 2] for i in (0, 2, 4, 6)),
                                  "netmask": "255.255.255.0",
                                  "internalName": "vnic9.0", "deviceId": 0, "createDate": now, "lastOpDate": now})
    return nic


async def test_vip_and_eip_lifecycle_and_rules(api: Api) -> None:
    env = await _env(api)
    vip = await api.inv("CreateVip", name="v", l3NetworkUuid=env["pub"], requiredIp="192.168.77.15")
    assert {k: vip[k] for k in ("ip", "gateway", "netmask", "state", "l3NetworkUuid")} == {
        "ip": "192.168.77.15", "gateway": "192.168.77.1", "netmask": "255.255.255.0", "state": "Enabled",
        "l3NetworkUuid": env["pub"]} and vip["useFor"] is None
    s, body = await api.raw("CreateVip", name="v2", l3NetworkUuid=env["pub"], requiredIp="192.168.77.15")
    assert s == 409 and "there is already a vip[192.168.77.15]" in body["error"]["details"]
    s, body = await api.raw("CreateVip", name="v2", l3NetworkUuid=env["pub"], requiredIp="192.168.78.1")
    assert s == 400 and "requiredIp[192.168.78.1]" in body["error"]["details"]
    guest_nic = await _nic(api, env["guest"], "10.100.0.12")
    other_nic = await _nic(api, env["guest"], "10.100.0.13")
    pub_nic = await _nic(api, env["pub"], "192.168.77.12")
    plain_nic = await _nic(api, env["plain"], "10.101.0.12")
    for nic, status, text in ((pub_nic, 400, "is on the vip's L3 network"),
                              (plain_nic, 409, "has no Eip service of the VirtualRouter provider"),
                              ("3" * 32, 404, "VmNicVO")):
        s, body = await api.raw("CreateEip", name="e", vipUuid=vip["uuid"], vmNicUuid=nic)
        assert s == status and text in body["error"]["details"], (s, body)
    assert await api.query("QueryEip") == []
    eip = await api.inv("CreateEip", name="e", vipUuid=vip["uuid"], vmNicUuid=guest_nic)
    assert eip["vipIp"] == "192.168.77.15" and eip["guestIp"] == "10.100.0.12" and eip["vmNicUuid"] == guest_nic
    [v] = await api.query("QueryVip", ("uuid", "=", vip["uuid"]))
    assert v["useFor"] == "Eip" and v["peerL3NetworkUuid"] == env["guest"]
    s, body = await api.raw("CreateEip", name="e2", vipUuid=vip["uuid"])
    assert s == 409 and "has been occupied other network service entity[Eip]" in body["error"]["details"]
    vip2 = await api.inv("CreateVip", name="v2", l3NetworkUuid=env["pub"])
    s, body = await api.raw("CreateEip", name="e2", vipUuid=vip2["uuid"], vmNicUuid=guest_nic)
    assert s == 409 and f"has attached to another eip[uuid:{eip['uuid']}]" in body["error"]["details"]
    s, body = await api.raw("AttachEip", eipUuid=eip["uuid"], vmNicUuid=other_nic)
    assert s == 409 and "has attached to another vm nic" in body["error"]["details"]
    detached = await api.inv("DetachEip", uuid=eip["uuid"])
    assert detached["vmNicUuid"] is None and detached["guestIp"] is None
    s, body = await api.raw("DetachEip", uuid=eip["uuid"])
    assert s == 409 and "has not attached to any vm nic" in body["error"]["details"]
    attachable = await api.call("GetEipAttachableVmNics", eipUuid=eip["uuid"])
    assert {n["uuid"] for n in attachable["inventories"]} == {guest_nic, other_nic}
    s, body = await api.raw("GetEipAttachableVmNics")
    assert s == 400 and "eipUuid" in body["error"]["details"]
    assert (await api.inv("AttachEip", eipUuid=eip["uuid"], vmNicUuid=other_nic))["guestIp"] == "10.100.0.13"
    assert [n["uuid"] for n in (await api.call("GetEipAttachableVmNics", vipUuid=vip2["uuid"]))["inventories"]] \
        == [guest_nic]   # not the NIC with the EIP, not the VIP's L3, not an L3 without the Eip service
    assert (await api.inv("UpdateEip", uuid=eip["uuid"], name="renamed"))["name"] == "renamed"
    assert (await api.inv("UpdateVip", uuid=vip["uuid"], description="d"))["description"] == "d"
    assert (await api.inv("ChangeEipState", uuid=eip["uuid"], stateEvent="disable"))["state"] == "Disabled"
    s, body = await api.raw("AttachEip", eipUuid=eip["uuid"], vmNicUuid=guest_nic)
    assert s == 409 and "has attached to another vm nic" in body["error"]["details"]
    assert (await api.inv("ChangeVipState", uuid=vip2["uuid"], stateEvent="disable"))["state"] == "Disabled"
    s, body = await api.raw("CreateEip", name="e3", vipUuid=vip2["uuid"])
    assert s == 409 and "is Disabled, not Enabled" in body["error"]["details"]
    await api.call("DeleteEip", uuid=eip["uuid"])
    await api.call("DeleteEip", uuid=eip["uuid"])  # unknown uuid: success (1.0)
    [v] = await api.query("QueryVip", ("uuid", "=", vip["uuid"]))
    assert v["useFor"] is None
    await api.call("DeleteVip", uuid=vip["uuid"])
    assert [x["uuid"] for x in await api.query("QueryVip")] == [vip2["uuid"]]
    assert (await api.inv("CreateVip", name="again", l3NetworkUuid=env["pub"],
                          requiredIp="192.168.77.15"))["ip"] == "192.168.77.15"   # the address came back
