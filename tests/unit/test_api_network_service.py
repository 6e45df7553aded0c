"""Network service providers and network-service APIs (reference §3.1) and the seed's section 13 flow."""

from __future__ import annotations

from typing import Any

import pytest
from test_api_support import _core, network, provider, refused

from controller.resources import network_service
from controller.resources.network_service import _bootstrap

L3_KEYS = {"uuid", "name", "description", "type", "zoneUuid", "l2NetworkUuid", "state", "dnsDomain", "system",
           "dns", "ipRanges", "networkServices", "createDate", "lastOpDate"}
RANGE_KEYS = {"uuid", "name", "description", "l3NetworkUuid", "startIp", "endIp", "netmask", "gateway",
              "networkCidr", "createDate", "lastOpDate"}
NSP_KEYS = {"uuid", "name", "description", "type", "networkServiceTypes", "attachedL2NetworkUuids", "createDate",
            "lastOpDate"}


def check_l3(inv: dict[str, Any], l3: dict[str, Any], l2_uuid: str, zone_uuid: str,
             services: list[tuple[str, str]]) -> None:
    """The L3 inventory as the seed's section 13 shows it (seed keys + description/dnsDomain, null there)."""
    assert set(inv) == L3_KEYS
    assert inv["uuid"] == l3["uuid"] and inv["name"] == "l3-etpz" and inv["type"] == "L3BasicNetwork"
    assert inv["l2NetworkUuid"] == l2_uuid and inv["zoneUuid"] == zone_uuid
    assert inv["state"] == "Enabled" and inv["system"] is False and inv["dns"] == ["8.8.8.8"]
    [r] = inv["ipRanges"]
    assert set(r) == RANGE_KEYS
    assert (r["name"], r["startIp"], r["endIp"], r["gateway"], r["netmask"], r["l3NetworkUuid"]) == (
        "ipr-dk7p", "192.168.201.180", "192.168.201.199", "192.168.200.1", "255.255.252.0", l3["uuid"])
    assert r["networkCidr"] == "192.168.200.0/22"
    assert inv["networkServices"] == [
        {"l3NetworkUuid": l3["uuid"], "networkServiceProviderUuid": p, "networkServiceType": t} for p, t in services]


async def test_seed_section_13_flow(api: Any) -> None:
    z, l2, l3 = await network(api)
    vr, flat = await provider(api, "VirtualRouter"), await provider(api, "Flat")
    await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=l3["uuid"],
                   networkServices={vr["uuid"]: ["DHCP", "DNS"]})
    changed: list[str] = []

    async def listener(ctx: Any, l3_uuid: str) -> None:
        changed.append(l3_uuid)

    network_service.listen_services_changed(listener)
    try:
        # 1. the VirtualRouter refs of the L3
        refs = await api.query("QueryNetworkServiceL3NetworkRef", ("l3NetworkUuid", "=", l3["uuid"]))
        assert sorted((r["networkServiceProviderUuid"], r["networkServiceType"]) for r in refs) == [
            (vr["uuid"], "DHCP"), (vr["uuid"], "DNS")]
        assert all(set(r) == {"l3NetworkUuid", "networkServiceProviderUuid", "networkServiceType"} for r in refs)
        # 2. detach them
        inv = (await api.call("DetachNetworkServiceFromL3Network", l3NetworkUuid=l3["uuid"],
                              networkServices={vr["uuid"]: ["DHCP", "DNS"]}))["inventory"]
        check_l3(inv, l3, l2["uuid"], z["uuid"], [])
        # 3. the Flat provider
        [f] = await api.query("QueryNetworkServiceProvider", ("type", "=", "Flat"))
        assert set(f) == NSP_KEYS
        assert (f["name"], f["description"], f["type"]) == ("Flat Network Service Provider",) * 2 + ("Flat",)
        assert f["networkServiceTypes"] == ["DHCP", "Userdata"]
        assert f["attachedL2NetworkUuids"] == [l2["uuid"]]
        # 4. the L3's L2
        assert await api.query("QueryL3Network", ("uuid", "=", l3["uuid"]), fields=["l2NetworkUuid"]) == [
            {"l2NetworkUuid": l2["uuid"]}]
        # 5. attach Flat to the L2 (already referenced since the L2's creation: idempotent)
        p = (await api.call("AttachNetworkServiceProviderToL2Network", l2NetworkUuid=l2["uuid"],
                            networkServiceProviderUuid=flat["uuid"]))["inventory"]
        assert p == f
        # 6. attach DHCP + Userdata of Flat
        inv = (await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=l3["uuid"],
                              networkServices={flat["uuid"]: ["DHCP", "Userdata"]}))["inventory"]
        check_l3(inv, l3, l2["uuid"], z["uuid"], [(flat["uuid"], "DHCP"), (flat["uuid"], "Userdata")])
    finally:
        network_service._LISTENERS.remove(listener)
    assert changed == [l3["uuid"], l3["uuid"]]


async def test_providers_created_once_and_idempotent(api: Any) -> None:
    invs = await api.query("QueryNetworkServiceProvider")
    by_type = {p["type"]: p for p in invs}
    assert sorted(by_type) == ["Flat", "SecurityGroup", "VirtualRouter"]
    assert by_type["VirtualRouter"]["networkServiceTypes"] == sorted(
        ["DHCP", "DNS", "SNAT", "PortForwarding", "Eip", "LoadBalancer"])
    assert by_type["SecurityGroup"]["networkServiceTypes"] == ["SecurityGroup"]
    await _bootstrap(_core(api))  # a second start changes nothing
    assert await api.query("QueryNetworkServiceProvider") == invs
    types = (await api.call("GetNetworkServiceTypes"))["types"]
    assert types == {t: p["networkServiceTypes"] for t, p in by_type.items()}


async def test_new_l2_is_referenced_by_all_providers(api: Any) -> None:
    _, l2, _ = await network(api)
    vlan = (await api.call("CreateL2VlanNetwork", zoneUuid=l2["zoneUuid"], name="v", physicalInterface="eth0",
                           vlan=10))["inventory"]
    for p in await api.query("QueryNetworkServiceProvider"):
        assert p["attachedL2NetworkUuids"] == sorted([l2["uuid"], vlan["uuid"]])


async def test_attach_service_rules(api: Any) -> None:
    _, _, l3 = await network(api)
    vr, flat = await provider(api, "VirtualRouter"), await provider(api, "Flat")
    u = l3["uuid"]
    await refused(api, "AttachNetworkServiceToL3Network", 400, "SYS.1007", "networkServices cannot be empty",
                  l3NetworkUuid=u, networkServices={})
    await refused(api, "AttachNetworkServiceToL3Network", 400, "SYS.1007",
                  f"network service for provider[uuid:{flat['uuid']}] must be specified",
                  l3NetworkUuid=u, networkServices={flat["uuid"]: []})
    await refused(api, "AttachNetworkServiceToL3Network", 404, "SYS.1003", "networkServices", "0" * 32,
                  l3NetworkUuid=u, networkServices={"0" * 32: ["DHCP"]})
    await refused(api, "AttachNetworkServiceToL3Network", 400, "SYS.1007",
                  f"network service provider[uuid:{flat['uuid']}] doesn't provide services['DNS']",
                  l3NetworkUuid=u, networkServices={flat["uuid"]: ["DHCP", "DNS"]})
    await refused(api, "AttachNetworkServiceToL3Network", 400, "SYS.1007", "networkServices",
                  l3NetworkUuid=u, networkServices="DHCP")
    await refused(api, "AttachNetworkServiceToL3Network", 400, "SYS.1007", "networkServices",
                  l3NetworkUuid=u, networkServices={flat["uuid"]: [1, 2]})
    await refused(api, "AttachNetworkServiceToL3Network", 400, "SYS.1007", "field[networkServices]",
                  "mandatory", l3NetworkUuid=u)
    await refused(api, "AttachNetworkServiceToL3Network", 404, "SYS.1003", "invalid field[l3NetworkUuid]",
                  l3NetworkUuid="1" * 32, networkServices={flat["uuid"]: ["DHCP"]})
    await refused(api, "AttachNetworkServiceToL3Network", 400, "SYS.1007", "network service[DHCP]",
                  l3NetworkUuid=u, networkServices={flat["uuid"]: ["DHCP"], vr["uuid"]: ["DHCP"]})
    await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=u, networkServices={vr["uuid"]: ["DHCP"]})
    # DHCP again, from any provider, in a map that also holds a valid new service: nothing is written
    for p in (vr, flat):
        await refused(api, "AttachNetworkServiceToL3Network", 409, "SYS.1006",
                      f"there has been a network service[DHCP] attached to L3 network[uuid:{u}]",
                      l3NetworkUuid=u, networkServices={vr["uuid"]: ["SNAT"], p["uuid"]: ["DHCP"]})
    # mixing providers is allowed
    inv = (await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=u,
                          networkServices={flat["uuid"]: ["Userdata"], vr["uuid"]: ["SNAT", "Eip"]}))["inventory"]
    assert sorted((s["networkServiceType"], s["networkServiceProviderUuid"]) for s in inv["networkServices"]) == [
        ("DHCP", vr["uuid"]), ("Eip", vr["uuid"]), ("SNAT", vr["uuid"]), ("Userdata", flat["uuid"])]


async def test_detach_service_rules(api: Any) -> None:
    _, _, l3 = await network(api)
    vr, flat = await provider(api, "VirtualRouter"), await provider(api, "Flat")
    u = l3["uuid"]
    await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=u, networkServices={vr["uuid"]: ["DHCP", "DNS"]})
    # DHCP is attached but from VirtualRouter, not Flat: refused, DNS of the same call stays
    await refused(api, "DetachNetworkServiceFromL3Network", 400, "SYS.1007", "network service[DHCP]",
                  f"provider[uuid:{flat['uuid']}]", f"L3 network[uuid:{u}]",
                  l3NetworkUuid=u, networkServices={vr["uuid"]: ["DNS"], flat["uuid"]: ["DHCP"]})
    await refused(api, "DetachNetworkServiceFromL3Network", 400, "SYS.1007", "network service[SNAT]",
                  l3NetworkUuid=u, networkServices={vr["uuid"]: ["SNAT"]})
    await refused(api, "DetachNetworkServiceFromL3Network", 400, "SYS.1007", "networkServices cannot be empty",
                  l3NetworkUuid=u, networkServices={})
    inv = (await api.call("DetachNetworkServiceFromL3Network", l3NetworkUuid=u,
                          networkServices={vr["uuid"]: ["DNS"]}))["inventory"]
    assert [s["networkServiceType"] for s in inv["networkServices"]] == ["DHCP"]


async def test_provider_l2_attach_detach(api: Any) -> None:
    _, l2, l3 = await network(api)
    flat = await provider(api, "Flat")
    args = {"l2NetworkUuid": l2["uuid"], "networkServiceProviderUuid": flat["uuid"]}
    await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=l3["uuid"],
                   networkServices={flat["uuid"]: ["DHCP"]})
    await refused(api, "DetachNetworkServiceProviderFromL2Network", 409, "SYS.1006", "service[DHCP]", l3["uuid"],
                  **args)
    await api.call("DetachNetworkServiceFromL3Network", l3NetworkUuid=l3["uuid"],
                   networkServices={flat["uuid"]: ["DHCP"]})
    inv = (await api.call("DetachNetworkServiceProviderFromL2Network", **args))["inventory"]
    assert inv["attachedL2NetworkUuids"] == []
    await refused(api, "DetachNetworkServiceProviderFromL2Network", 400, "SYS.1007", "is not attached", **args)
    for _ in range(2):
        inv = (await api.call("AttachNetworkServiceProviderToL2Network", **args))["inventory"]
        assert inv["attachedL2NetworkUuids"] == [l2["uuid"]]
    await refused(api, "AttachNetworkServiceProviderToL2Network", 404, "SYS.1003",
                  "invalid field[networkServiceProviderUuid]", l2NetworkUuid=l2["uuid"],
                  networkServiceProviderUuid="2" * 32)


@pytest.mark.parametrize("bad", ["not-a-uuid", 12])
async def test_bad_uuid_type(api: Any, bad: Any) -> None:
    await refused(api, "AttachNetworkServiceProviderToL2Network", 400, "SYS.1007", "l2NetworkUuid",
                  l2NetworkUuid=bad, networkServiceProviderUuid="2" * 32)
