"""L2 and L3 networks, DNS and IP ranges through the API: happy paths, 1.0's rules, nothing written on refusal."""

from __future__ import annotations

from typing import Any

from test_api_support import _core, cluster, ip_range, l2, l3, network, refused, zone

L2_KEYS = {"uuid", "name", "description", "zoneUuid", "physicalInterface", "type", "attachedClusterUuids",
           "createDate", "lastOpDate"}


async def test_l2_create_bridge_tag_and_query(api: Any) -> None:
    z = await zone(api)
    nv = await l2(api, z["uuid"])
    v = await l2(api, z["uuid"], vlan=10, name="v10")
    assert set(nv) == L2_KEYS and set(v) == L2_KEYS | {"vlan"}
    assert (nv["type"], nv["physicalInterface"], nv["attachedClusterUuids"]) == ("L2NoVlanNetwork", "eth0", [])
    assert (v["type"], v["vlan"]) == ("L2VlanNetwork", 10)
    [tag] = await api.query("QuerySystemTag", ("resourceUuid", "=", nv["uuid"]))
    assert (tag["tag"], tag["inherent"], tag["resourceType"]) == ("kvm::bridge::br_eth0", True, "L2NetworkVO")
    got = await api.query("QueryL2Network", ("__systemTag__", "=", "kvm::bridge::br_eth0_10"))
    assert [x["uuid"] for x in got] == [v["uuid"]]
    assert [x["uuid"] for x in await api.query("QueryL2VlanNetwork", ("vlan", "=", 10))] == [v["uuid"]]


async def test_l2_bad_input(api: Any) -> None:
    z = await zone(api)
    base = {"zoneUuid": z["uuid"], "name": "x", "physicalInterface": "eth0"}
    await refused(api, "CreateL2VlanNetwork", 400, "SYS.1007", "vlan", **base, vlan=4096)
    await refused(api, "CreateL2VlanNetwork", 400, "SYS.1007", "field[vlan]", "mandatory", **base)
    await refused(api, "CreateL2VlanNetwork", 400, "SYS.1007", "vlan", **base, vlan="ten")
    await refused(api, "CreateL2NoVlanNetwork", 400, "SYS.1007", "field[physicalInterface]", "mandatory",
                  zoneUuid=z["uuid"], name="x")
    await refused(api, "CreateL2NoVlanNetwork", 404, "SYS.1003", "invalid field[zoneUuid]",
                  **{**base, "zoneUuid": "3" * 32})
    await refused(api, "CreateL2NoVlanNetwork", 400, "SYS.1007", "physicalInterface[eth 0]",
                  **{**base, "physicalInterface": "eth 0"})
    await refused(api, "CreateL2VlanNetwork", 400, "SYS.1007", "br_enp0s31f6x_4000", "15",
                  **{**base, "physicalInterface": "enp0s31f6x"}, vlan=4000)
    await refused(api, "CreateL2NoVlanNetwork", 400, "SYS.1007", "nosuch::tag",
                  **base, systemTags=["nosuch::tag"])


async def test_l2_cluster_attach_rules(api: Any) -> None:
    z = await zone(api)
    c = await cluster(api, z["uuid"])
    a, b = await l2(api, z["uuid"], name="a"), await l2(api, z["uuid"], name="b")
    v10, v10b = await l2(api, z["uuid"], vlan=10, name="v10"), await l2(api, z["uuid"], vlan=10, name="v10b")
    v11 = await l2(api, z["uuid"], vlan=11, name="v11")

    def attach(x: dict[str, Any]) -> dict[str, Any]:
        return {"l2NetworkUuid": x["uuid"], "clusterUuid": c["uuid"]}

    inv = (await api.call("AttachL2NetworkToCluster", **attach(a)))["inventory"]
    assert inv["attachedClusterUuids"] == [c["uuid"]]
    await refused(api, "AttachL2NetworkToCluster", 400, "SYS.1007", "can't attach again", **attach(a))
    await refused(api, "AttachL2NetworkToCluster", 400, "SYS.1007", f"L2NoVlanNetwork[uuid:{a['uuid']}",
                  "physical interface[eth0]", **attach(b))
    inv = (await api.call("AttachL2NetworkToCluster", **attach(v10)))["inventory"]  # NoVlan + Vlan on eth0: ok
    assert inv["vlan"] == 10
    await refused(api, "AttachL2NetworkToCluster", 400, "SYS.1007", "vlan[10]", **attach(v10b))
    await api.call("AttachL2NetworkToCluster", **attach(v11))
    z2 = await zone(api, "zone2")
    other = await cluster(api, z2["uuid"], "c2")
    await refused(api, "AttachL2NetworkToCluster", 400, "SYS.1007", "zone", l2NetworkUuid=a["uuid"],
                  clusterUuid=other["uuid"])
    await refused(api, "AttachL2NetworkToCluster", 404, "SYS.1003", "invalid field[clusterUuid]",
                  l2NetworkUuid=a["uuid"], clusterUuid="4" * 32)
    inv = (await api.call("DetachL2NetworkFromCluster", **attach(a)))["inventory"]
    assert inv["attachedClusterUuids"] == []
    await refused(api, "DetachL2NetworkFromCluster", 400, "SYS.1007", "has not attached", **attach(a))
    await api.call("AttachL2NetworkToCluster", **attach(b))  # the interface is free again


async def test_l2_update_and_delete_cascades(api: Any) -> None:
    _, l2n, _ = await network(api)
    inv = (await api.call("UpdateL2Network", uuid=l2n["uuid"], name="renamed", description="d"))["inventory"]
    assert (inv["name"], inv["description"]) == ("renamed", "d")
    await api.call("DeleteL2Network", uuid=l2n["uuid"])
    for q in ("QueryL2Network", "QueryL3Network", "QueryIpRange"):
        assert await api.query(q) == []
    assert await api.query("QuerySystemTag", ("resourceUuid", "=", l2n["uuid"])) == []
    await api.call("DeleteL2Network", uuid=l2n["uuid"])  # unknown uuid: success (1.0)


async def test_l3_create_update_state(api: Any) -> None:
    z = await zone(api)
    l2n = await l2(api, z["uuid"])
    inv = await l3(api, l2n["uuid"], dnsDomain="zstack.org", system=True, userTags=["web"])
    assert (inv["zoneUuid"], inv["dnsDomain"], inv["system"], inv["state"]) == (z["uuid"], "zstack.org", True,
                                                                                 "Enabled")
    assert (inv["dns"], inv["ipRanges"], inv["networkServices"]) == ([], [], [])
    assert [t["tag"] for t in await api.query("QueryUserTag", ("resourceUuid", "=", inv["uuid"]))] == ["web"]
    inv = (await api.call("ChangeL3NetworkState", uuid=inv["uuid"], stateEvent="disable"))["inventory"]
    assert inv["state"] == "Disabled"
    inv = (await api.call("UpdateL3Network", uuid=inv["uuid"], name="n2"))["inventory"]
    assert inv["name"] == "n2" and inv["state"] == "Disabled"
    await refused(api, "ChangeL3NetworkState", 400, "SYS.1007", "stateEvent", "maintain", uuid=inv["uuid"],
                  stateEvent="maintain")
    await refused(api, "CreateL3Network", 400, "SYS.1007", "not_a domain", l2NetworkUuid=l2n["uuid"], name="x",
                  dnsDomain="not_a domain")
    await refused(api, "CreateL3Network", 400, "SYS.1007", "type", "L3BasicNetwork", l2NetworkUuid=l2n["uuid"],
                  name="x", type="Fancy")
    await refused(api, "CreateL3Network", 404, "SYS.1003", "invalid field[l2NetworkUuid]", l2NetworkUuid="5" * 32,
                  name="x")
    await refused(api, "CreateL3Network", 400, "SYS.1007", "field[name]", "mandatory", l2NetworkUuid=l2n["uuid"])
    await refused(api, "CreateL3Network", 400, "SYS.1007", "resourceUuid", l2NetworkUuid=l2n["uuid"], name="x",
                  resourceUuid=inv["uuid"])


async def test_dns_order_and_rules(api: Any) -> None:
    _, _, l3n = await network(api)  # has 8.8.8.8
    u = l3n["uuid"]
    inv = (await api.call("AddDnsToL3Network", l3NetworkUuid=u, dns="1.1.1.1"))["inventory"]
    assert inv["dns"] == ["8.8.8.8", "1.1.1.1"]
    await refused(api, "AddDnsToL3Network", 409, "SYS.1006", "there has been a DNS[1.1.1.1]", l3NetworkUuid=u,
                  dns="1.1.1.1")
    await refused(api, "AddDnsToL3Network", 400, "SYS.1007", "dns[8.8.8]", l3NetworkUuid=u, dns="8.8.8")
    await refused(api, "AddDnsToL3Network", 404, "SYS.1003", "invalid field[l3NetworkUuid]", l3NetworkUuid="6" * 32,
                  dns="9.9.9.9")
    inv = (await api.call("RemoveDnsFromL3Network", l3NetworkUuid=u, dns="8.8.8.8"))["inventory"]
    assert inv["dns"] == ["1.1.1.1"]
    inv = (await api.call("AddDnsToL3Network", l3NetworkUuid=u, dns="8.8.8.8"))["inventory"]
    assert inv["dns"] == ["1.1.1.1", "8.8.8.8"]
    inv = (await api.call("RemoveDnsFromL3Network", l3NetworkUuid=u, dns="7.7.7.7"))["inventory"]
    assert inv["dns"] == ["1.1.1.1", "8.8.8.8"]


async def test_ip_range_rules(api: Any) -> None:
    _, _, l3n = await network(api)  # has 192.168.201.180-199 in 192.168.200.0/22, gateway .200.1
    u = l3n["uuid"]
    ok = {"l3NetworkUuid": u, "name": "r", "netmask": "255.255.252.0", "gateway": "192.168.200.1"}
    cases = [
        ({"startIp": "192.168.201.190", "endIp": "192.168.201.210"}, "overlap", "192.168.201.180"),
        ({"startIp": "192.168.201.170", "endIp": "192.168.201.180"}, "overlap", "192.168.201.199"),
        ({"startIp": "192.168.200.1", "endIp": "192.168.200.10"}, "gateway[192.168.200.1] can not be part", ""),
        ({"startIp": "192.168.202.10", "endIp": "192.168.202.1"}, "start ip[192.168.202.10] is behind", ""),
        ({"startIp": "192.168.202.1", "endIp": "192.168.204.1"}, "endip[192.168.204.1] is not in the subnet", ""),
        ({"startIp": "192.168.202.1", "endIp": "192.168.202.300"}, "endIp[192.168.202.300]", "IPv4"),
        ({"startIp": "fe80::1", "endIp": "192.168.202.3"}, "startIp[fe80::1]", ""),
        ({"startIp": "192.168.200.0", "endIp": "192.168.200.9"}, "network address", ""),
        ({"startIp": "192.168.202.1", "endIp": "192.168.202.5", "netmask": "255.0.255.0"}, "netmask[255.0.255.0]",
         "not a netmask"),
        ({"startIp": "192.168.202.1", "endIp": "192.168.202.5", "gateway": "10.0.0.1"},
         "the gateway[10.0.0.1] is not in the subnet", ""),
    ]
    for extra, *needles in cases:
        await refused(api, "AddIpRange", 400, "SYS.1007", *[n for n in needles if n], **{**ok, **extra})
    await refused(api, "AddIpRange", 400, "SYS.1007", "field[gateway]", "mandatory", l3NetworkUuid=u, name="r",
                  startIp="192.168.202.1", endIp="192.168.202.5", netmask="255.255.252.0")
    await refused(api, "AddIpRange", 404, "SYS.1003", "invalid field[l3NetworkUuid]",
                  **{**ok, "l3NetworkUuid": "7" * 32}, startIp="192.168.202.1", endIp="192.168.202.5")
    inv = await ip_range(api, u, "192.168.201.200", "192.168.201.200", name="one")
    assert (inv["startIp"], inv["endIp"], inv["networkCidr"]) == ("192.168.201.200",) * 2 + ("192.168.200.0/22",)
    assert "startInt" not in inv
    got = await api.query("QueryL3Network", ("ipRanges.startIp", "=", "192.168.201.200"))
    assert [g["uuid"] for g in got] == [u]
    assert [r["name"] for r in got[0]["ipRanges"]] == ["ipr-dk7p", "one"]


async def test_ip_range_by_cidr(api: Any) -> None:
    z = await zone(api)
    l3n = await l3(api, (await l2(api, z["uuid"]))["uuid"])
    inv = (await api.call("AddIpRangeByNetworkCidr", l3NetworkUuid=l3n["uuid"], name="c",
                          networkCidr="10.1.2.77/24"))["inventory"]
    assert (inv["gateway"], inv["startIp"], inv["endIp"], inv["netmask"], inv["networkCidr"]) == (
        "10.1.2.1", "10.1.2.2", "10.1.2.254", "255.255.255.0", "10.1.2.0/24")
    await refused(api, "AddIpRangeByNetworkCidr", 400, "SYS.1007", "overlap", l3NetworkUuid=l3n["uuid"], name="c",
                  networkCidr="10.1.2.0/25")
    await refused(api, "AddIpRangeByNetworkCidr", 400, "SYS.1007", "10.1.3.0/33", l3NetworkUuid=l3n["uuid"],
                  name="c", networkCidr="10.1.3.0/33")
    await refused(api, "AddIpRangeByNetworkCidr", 400, "SYS.1007", "doesn't have usable ip range",
                  l3NetworkUuid=l3n["uuid"], name="c", networkCidr="10.1.3.0/31")
    inv = (await api.call("UpdateIpRange", uuid=inv["uuid"], name="renamed"))["inventory"]
    assert inv["name"] == "renamed"


async def _vm_with_nic(api: Any, l3_uuid: str) -> str:
    """A VM row with one NIC holding an address of the L3 (written directly: VM APIs come later)."""
    from controller.resources import ipam

    db = _core(api).db
    async with db.write() as tx:
        used = await ipam.allocate(tx, l3_uuid, strategy="first", used_for="VmNic")
        await tx.insert("VmInstance", {"uuid": "a" * 32, "name": "vm", "memorySize": 1, "cpuNum": 1, "cpuSpeed": 1,
                                       "internalId": 1, "createDate": "x", "lastOpDate": "x"})
        await tx.insert("VmNic", {"uuid": "b" * 32, "vmInstanceUuid": "a" * 32, "usedIpUuid": used["uuid"],
                                  "l3NetworkUuid": l3_uuid, "ip": used["ip"], "mac": "fa:00:00:00:00:00",
                                  "internalName": "vnic1.0", "deviceId": 0, "createDate": "x", "lastOpDate": "x"})
    return used["ip"]


async def test_delete_ip_range_and_l3_with_nics(api: Any) -> None:
    _, l2n, l3n = await network(api)
    [rng] = (await api.call("QueryIpRange", conditions=[]))["inventories"]
    ip = await _vm_with_nic(api, l3n["uuid"])
    assert ip == "192.168.201.180"
    await refused(api, "DeleteIpRange", 409, "SYS.1006", rng["uuid"], "a" * 32, uuid=rng["uuid"])
    await refused(api, "DeleteL3Network", 409, "SYS.1006", "a" * 32, uuid=l3n["uuid"])
    await refused(api, "DeleteL2Network", 409, "SYS.1006", "a" * 32, uuid=l2n["uuid"])
    await api.call("DeleteIpRange", uuid=rng["uuid"], deleteMode="Enforcing")
    [nic] = await api.query("QueryVmNic")
    assert (nic["ip"], nic["usedIpUuid"], nic["l3NetworkUuid"]) == (None, None, l3n["uuid"])
    assert await api.query("QueryUsedIp") == []
    await api.call("DeleteL3Network", uuid=l3n["uuid"], deleteMode="Enforcing")
    [nic] = await api.query("QueryVmNic")
    assert nic["l3NetworkUuid"] is None


async def test_delete_ip_range_drops_dhcp_server_tag(api: Any) -> None:
    from controller.resources import ipam

    _, _, l3n = await network(api)
    [rng] = await api.query("QueryIpRange")
    core = _core(api)
    async with core.db.write() as tx:
        used = await ipam.allocate(tx, l3n["uuid"], strategy="first", used_for="DhcpServer")
        await core.services["tags"].write(tx, "L3NetworkVO", l3n["uuid"],
                                          f"flatNetwork::DhcpServer::{used['ip']}::ipUuid::{used['uuid']}",
                                          system=True, inherent=True)
    assert len(await api.query("QuerySystemTag", ("resourceUuid", "=", l3n["uuid"]))) == 1
    await api.call("DeleteIpRange", uuid=rng["uuid"])
    assert await api.query("QuerySystemTag", ("resourceUuid", "=", l3n["uuid"])) == []
    assert await api.query("QueryUsedIp") == []


async def test_get_free_ip_and_check_availability(api: Any) -> None:
    _, _, l3n = await network(api)
    ip = await _vm_with_nic(api, l3n["uuid"])  # takes .180
    free = (await api.call("GetFreeIp", l3NetworkUuid=l3n["uuid"], limit=3))["inventories"]
    assert [f["ip"] for f in free] == ["192.168.201.181", "192.168.201.182", "192.168.201.183"]
    assert set(free[0]) == {"ipRangeUuid", "ip", "netmask", "gateway"}
    free = (await api.call("GetFreeIp", ipRangeUuid=free[0]["ipRangeUuid"], start="192.168.201.198"))["inventories"]
    assert [f["ip"] for f in free] == ["192.168.201.198", "192.168.201.199"]
    await refused(api, "GetFreeIp", 400, "SYS.1007", "l3NetworkUuid", "ipRangeUuid")
    await refused(api, "GetFreeIp", 404, "SYS.1003", "invalid field[ipRangeUuid]", ipRangeUuid="8" * 32)
    check = {"l3NetworkUuid": l3n["uuid"]}
    assert (await api.call("CheckIpAvailability", **check, ip=ip))["available"] is False
    assert (await api.call("CheckIpAvailability", **check, ip="192.168.201.181"))["available"] is True
    assert (await api.call("CheckIpAvailability", **check, ip="192.168.202.1"))["available"] is False
    await refused(api, "CheckIpAvailability", 400, "SYS.1007", "ip[x.y]", **check, ip="x.y")
