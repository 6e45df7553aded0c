"""Helpers for the resource API tests (imported by the other ``test_api_*`` modules; no tests here).

Each helper calls the real API through the ``api`` fixture's HTTP test client and returns inventories.
"""

from __future__ import annotations

from typing import Any

Api = Any  # the conftest fixture's Api (conftest modules are not importable by name)

TABLES = ("Zone", "Cluster", "PrimaryStorage", "PrimaryStorageClusterRef", "BackupStorage", "BackupStorageZoneRef",
          "InstanceOffering", "DiskOffering", "L2Network", "L2NetworkClusterRef", "L3Network", "L3NetworkDns",
          "IpRange", "UsedIp", "NetworkServiceL3NetworkRef", "NetworkServiceProviderL2NetworkRef", "SystemTag",
          "UserTag")


async def zone(api: Api, name: str = "zone1") -> dict[str, Any]:
    return (await api.call("CreateZone", name=name))["inventory"]


async def cluster(api: Api, zone_uuid: str, name: str = "cluster1") -> dict[str, Any]:
    return (await api.call("CreateCluster", zoneUuid=zone_uuid, name=name, hypervisorType="KVM"))["inventory"]


async def l2(api: Api, zone_uuid: str, iface: str = "eth0", vlan: int | None = None,
             name: str = "l2") -> dict[str, Any]:
    if vlan is None:
        return (await api.call("CreateL2NoVlanNetwork", zoneUuid=zone_uuid, name=name,
                               physicalInterface=iface))["inventory"]
    return (await api.call("CreateL2VlanNetwork", zoneUuid=zone_uuid, name=name, physicalInterface=iface,
                           vlan=vlan))["inventory"]


async def l3(api: Api, l2_uuid: str, name: str = "l3-etpz", **kw: Any) -> dict[str, Any]:
    return (await api.call("CreateL3Network", l2NetworkUuid=l2_uuid, name=name, **kw))["inventory"]


async def ip_range(api: Api, l3_uuid: str, start: str = "192.168.201.180", end: str = "192.168.201.199",
                   netmask: str = "255.255.252.0", gateway: str = "192.168.200.1",
                   name: str = "ipr-dk7p") -> dict[str, Any]:
    return (await api.call("AddIpRange", l3NetworkUuid=l3_uuid, name=name, startIp=start, endIp=end,
                           netmask=netmask, gateway=gateway))["inventory"]


async def network(api: Api) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """zone, L2 (NoVlan eth0) and L3 with the seed's range and DNS 8.8.8.8: (zone, l2, l3)."""
    z = await zone(api)
    l2n = await l2(api, z["uuid"])
    l3n = await l3(api, l2n["uuid"])
    await ip_range(api, l3n["uuid"])
    await api.call("AddDnsToL3Network", l3NetworkUuid=l3n["uuid"], dns="8.8.8.8")
    return z, l2n, l3n


async def provider(api: Api, type_: str) -> dict[str, Any]:
    invs = await api.query("QueryNetworkServiceProvider", ("type", "=", type_))
    assert len(invs) == 1
    return invs[0]


async def snapshot(api: Api) -> dict[str, int]:
    """Row counts of every resource table: compared before/after a refused call (nothing written)."""
    db = _core(api).db
    out = {}
    for t in TABLES:
        row = await db.fetchone(f"SELECT COUNT(*) FROM {t}")
        out[t] = row[0]
    return out


def _core(api: Api) -> Any:
    from controller.api.http import CORE

    return api.client.server.app[CORE]


async def refused(api: Api, api_name: str, status: int, code: str, /, *needles: str,
                  **params: Any) -> dict[str, Any]:
    """Call ``api_name`` expecting a refusal with ``status``/``code`` whose details contain every needle, and
    assert that no table changed."""
    before = await snapshot(api)
    got, body = await api.raw(api_name, **params)
    assert got == status, (got, body)
    assert body["success"] is False and body["error"]["code"] == code, body
    for n in needles:
        assert n in body["error"]["details"], (n, body["error"]["details"])
    assert await snapshot(api) == before, f"{api_name} wrote something although it was refused"
    return body["error"]
