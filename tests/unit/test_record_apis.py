"""The Update / Change*State / Delete APIs registered by resources/common.py's factories, over every resource
that uses them: fields written (None leaves a field alone), state events mapped, 1.0's 404 for an unknown
uuid, delete of an unknown uuid succeeds and a real delete removes the row."""

from __future__ import annotations

import pytest
from apiclient import Api

GiB = 1 << 30
UNKNOWN = "f" * 32


async def _records(api: Api) -> dict[str, str]:
    zone = (await api.call("CreateZone", name="z"))["inventory"]["uuid"]
    cluster = (await api.call("CreateCluster", name="c", zoneUuid=zone, hypervisorType="KVM"))["inventory"]["uuid"]
    l2 = (await api.call("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone, physicalInterface="eth0"))["inventory"]
    l3 = (await api.call("CreateL3Network", name="l3", l2NetworkUuid=l2["uuid"]))["inventory"]["uuid"]
    rng = (await api.call("AddIpRange", l3NetworkUuid=l3, name="r", startIp="10.0.0.10", endIp="10.0.0.20",
                          netmask="255.255.255.0", gateway="10.0.0.1"))["inventory"]["uuid"]
    io = (await api.call("CreateInstanceOffering", name="i", cpuNum=1, cpuSpeed=1, memorySize=GiB))["inventory"]
    do = (await api.call("CreateDiskOffering", name="d", diskSize=GiB))["inventory"]
    return {"Zone": zone, "Cluster": cluster, "L3Network": l3, "IpRange": rng, "InstanceOffering": io["uuid"],
            "DiskOffering": do["uuid"]}


async def _inv(api: Api, table: str, uuid: str) -> dict[str, str]:
    [inv] = await api.query(f"Query{table}", ("uuid", "=", uuid))
    return inv


@pytest.mark.parametrize("table", ["Zone", "Cluster", "L3Network", "IpRange", "InstanceOffering", "DiskOffering"])
async def test_update(api: Api, table: str) -> None:
    uuid = (await _records(api))[table]
    inv = (await api.call(f"Update{table}", uuid=uuid, name="renamed", description="about"))["inventory"]
    assert (inv["uuid"], inv["name"], inv["description"]) == (uuid, "renamed", "about")
    inv = (await api.call(f"Update{table}", uuid=uuid, description="only"))["inventory"]
    assert (inv["name"], inv["description"]) == ("renamed", "only")
    assert (await _inv(api, table, uuid))["description"] == "only"
    status, body = await api.raw(f"Update{table}", uuid=UNKNOWN, name="x")
    assert status == 404 and body["error"]["code"] == "SYS.1003", body
    assert f"resource[uuid:{UNKNOWN}, type:{table}VO] not found" in body["error"]["details"]


@pytest.mark.parametrize("table", ["Zone", "Cluster", "L3Network", "InstanceOffering", "DiskOffering"])
async def test_change_state(api: Api, table: str) -> None:
    uuid = (await _records(api))[table]
    assert (await api.call(f"Change{table}State", uuid=uuid, stateEvent="disable"))["inventory"]["state"] == "Disabled"
    assert (await _inv(api, table, uuid))["state"] == "Disabled"
    assert (await api.call(f"Change{table}State", uuid=uuid, stateEvent="enable"))["inventory"]["state"] == "Enabled"
    status, body = await api.raw(f"Change{table}State", uuid=uuid, stateEvent="maintain")
    assert status == 400 and "stateEvent" in body["error"]["details"], body
    status, body = await api.raw(f"Change{table}State", uuid=UNKNOWN, stateEvent="disable")
    assert status == 404 and body["error"]["code"] == "SYS.1003", body


async def test_delete_zone_and_cluster(api: Api) -> None:
    ids = await _records(api)
    await api.call("DeleteZone", uuid=UNKNOWN)  # 1.0: an unknown uuid succeeds
    await api.call("DeleteCluster", uuid=ids["Cluster"])
    assert await api.query("QueryCluster") == []
    await api.call("DeleteZone", uuid=ids["Zone"])
    assert await api.query("QueryZone") == [] and await api.query("QueryL3Network") == []
