"""Query semantics against a known data set (see test_query_support.seed_vms): exact result sets."""

from __future__ import annotations

import aiosqlite
import pytest
from test_query_support import db, migrated_template, seed_vms, uuids

from controller.query import QueryMsg, query

__all__ = ["db", "migrated_template"]


@pytest.fixture
async def vms(db: aiosqlite.Connection) -> aiosqlite.Connection:
    await seed_vms(db)
    return db


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        (("state", "=", "Running"), ["vm1", "vm2"]),
        (("state", "!=", "Running"), ["vm3", "vm4"]),
        (("cpuNum", ">", "2"), ["vm3", "vm4"]),
        (("cpuNum", "<", 2), ["vm1"]),
        (("cpuNum", ">=", "2"), ["vm2", "vm3", "vm4"]),
        (("cpuNum", "<=", "2"), ["vm1", "vm2"]),
        (("name", "in", "web1,db1"), ["vm1", "vm3"]),
        (("name", "in", ["web2", "app1"]), ["vm2", "vm4"]),
        (("name", "not in", "web1,db1"), ["vm2", "vm4"]),
        (("name", "like", "web%"), ["vm1", "vm2"]),
        (("name", "not like", "web%"), ["vm3", "vm4"]),
        (("name", "like", "WEB_"), ["vm1", "vm2"]),  # LIKE is case-insensitive, as 1.0's MySQL collation
        (("hostUuid", "is null", None), ["vm3", "vm4"]),
        (("hostUuid", "is not null", ""), ["vm1", "vm2"]),
        # CLI-style aliases
        (("name", "?=", "web1,web2"), ["vm1", "vm2"]),
        (("name", "!?=", "web1,web2"), ["vm3", "vm4"]),
        (("name", "~=", "%1"), ["vm1", "vm3", "vm4"]),
        (("name", "!~=", "%1"), ["vm2"]),
        (("hostUuid", "=null", ""), ["vm3", "vm4"]),
        (("hostUuid", "!=null", ""), ["vm1", "vm2"]),
        (("memorySize", "in", "1024, 8192"), ["vm1", "vm4"]),
    ],
)
async def test_operators(vms: aiosqlite.Connection, cond: tuple[str, str, object], expected: list[str]) -> None:
    assert await uuids(vms, "VmInstance", cond) == expected


async def test_conditions_are_anded(vms: aiosqlite.Connection) -> None:
    assert await uuids(vms, "VmInstance", ("state", "=", "Running"), ("cpuNum", ">", 1)) == ["vm2"]
    assert await uuids(vms, "VmInstance") == ["vm1", "vm2", "vm3", "vm4"]


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        (("vmNics.ip", "=", "10.0.0.11"), ["vm2"]),
        (("vmNics.ip", "like", "10.0.0.%"), ["vm1", "vm2"]),
        # 1.0 join semantics: "has a NIC whose ip != X"; vm4 (no NIC) and vm3 (NULL ip) do not match.
        (("vmNics.ip", "!=", "10.0.0.10"), ["vm1", "vm2"]),
        (("vmNics.ip", "is null", None), ["vm3"]),
        (("vmNics.l3Network.name", "=", "priv"), ["vm1", "vm3"]),
        (("vmNics.l3Network.l2Network.physicalInterface", "=", "eth0"), ["vm1", "vm2", "vm3"]),
        (("host.name", "=", "host1"), ["vm1"]),
        (("host.name", "!=", "host1"), ["vm2"]),  # has a host, named other than host1
        (("host.managementIp", "in", "172.20.0.1,172.20.0.2"), ["vm1", "vm2"]),
        (("host.cluster.zone.name", "=", "zone1"), ["vm1", "vm2"]),
        (("allVolumes.name", "=", "root-db1"), ["vm3"]),
        (("zone.name", "=", "zone1"), ["vm1", "vm2", "vm3", "vm4"]),
    ],
)
async def test_nested_fields(vms: aiosqlite.Connection, cond: tuple[str, str, object], expected: list[str]) -> None:
    assert await uuids(vms, "VmInstance", cond) == expected


async def test_nested_from_other_resources(vms: aiosqlite.Connection) -> None:
    assert await uuids(vms, "VmNic", ("vmInstance.name", "=", "web1")) == ["n1", "n2"]
    assert await uuids(vms, "L3Network", ("l2Network.physicalInterface", "=", "eth0")) == ["l3a", "l3b"]
    assert await uuids(vms, "L3Network", ("dns", "=", "1.1.1.1")) == ["l3a"]
    assert await uuids(vms, "L3Network", ("ipRanges.startIp", "=", "10.0.0.10")) == ["l3a"]
    assert await uuids(vms, "L3Network", ("networkServices.networkServiceType", "=", "DHCP")) == ["l3a"]
    assert await uuids(vms, "Host", ("cluster.name", "=", "cluster1"), sortBy="name", sortDirection="desc") == [
        "h2",
        "h1",
    ]
    assert await uuids(vms, "NetworkServiceProvider", ("networkServiceTypes", "=", "Userdata")) == ["nsp1"]
    assert await uuids(vms, "L2Network", ("attachedClusterUuids", "=", "c1")) == ["l2"]
    assert await uuids(vms, "L2VlanNetwork", ("vlan", "=", "10")) == ["l2v"]
    assert await uuids(vms, "L2NoVlanNetwork") == ["l2"]


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        (("__systemTag__", "=", "hostname::web1"), ["vm1"]),
        (("__systemTag__", "~=", "hostname::%"), ["vm1", "vm2"]),
        (("__systemTag__", "!=", "hostname::web1"), ["vm2", "vm3", "vm4"]),  # has no such tag
        (("__systemTag__", "is null", None), ["vm3", "vm4"]),  # has no system tag at all
        (("__userTag__", "=", "prod"), ["vm1", "vm2"]),
        (("__userTag__", "~=", "%e%"), ["vm3"]),
        (("__userTag__", "!=", "prod"), ["vm3", "vm4"]),
        (("__userTag__", "in", "dev,prod"), ["vm1", "vm2", "vm3"]),
        (("__userTag__", "!~=", "pro%"), ["vm3", "vm4"]),
    ],
)
async def test_tag_filters(vms: aiosqlite.Connection, cond: tuple[str, str, object], expected: list[str]) -> None:
    assert await uuids(vms, "VmInstance", cond) == expected


async def test_tags_combined_with_fields(vms: aiosqlite.Connection) -> None:
    got = await uuids(vms, "VmInstance", ("__userTag__", "=", "prod"), ("__systemTag__", "!=", "hostname::web1"))
    assert got == ["vm2"]


async def test_fields_returns_only_those(vms: aiosqlite.Connection) -> None:
    msg = QueryMsg(conditions=[], fields=["uuid", "name", "name"], sortBy="name")
    reply = await query(vms, "VmInstance", msg)
    assert reply == {
        "success": True,
        "inventories": [
            {"uuid": "vm4", "name": "app1"},
            {"uuid": "vm3", "name": "db1"},
            {"uuid": "vm1", "name": "web1"},
            {"uuid": "vm2", "name": "web2"},
        ],
    }


async def test_fields_as_cli_string_and_bool_conversion(vms: aiosqlite.Connection) -> None:
    msg = QueryMsg.model_validate({"conditions": [], "fields": "uuid,system", "sortBy": "uuid"})
    reply = await query(vms, "L3Network", msg)
    assert reply["inventories"] == [{"uuid": "l3a", "system": False}, {"uuid": "l3b", "system": True}]
    assert await uuids(vms, "L3Network", ("system", "=", "true")) == ["l3b"]
    assert await uuids(vms, "L3Network", ("system", "=", False)) == ["l3a"]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"limit": 2, "sortBy": "uuid"}, ["vm1", "vm2"]),
        ({"limit": 2, "start": 2, "sortBy": "uuid"}, ["vm3", "vm4"]),
        ({"limit": 2, "start": 3, "sortBy": "uuid"}, ["vm4"]),
        ({"start": 10, "sortBy": "uuid"}, []),
        ({"limit": 0, "sortBy": "uuid"}, []),
        ({"sortBy": "cpuNum", "sortDirection": "desc"}, ["vm4", "vm3", "vm2", "vm1"]),
        ({"sortBy": "name"}, ["vm4", "vm3", "vm1", "vm2"]),
        ({"sortBy": "name", "sortDirection": "asc", "limit": 1, "start": 1}, ["vm3"]),
        ({"sortBy": "state", "sortDirection": "DESC"}, ["vm3", "vm2", "vm1", "vm4"]),  # ties: rowid, same way
    ],
)
async def test_paging_and_sorting(vms: aiosqlite.Connection, kw: dict[str, object], expected: list[str]) -> None:
    assert await uuids(vms, "VmInstance", **kw) == expected


async def test_count_only_total(vms: aiosqlite.Connection) -> None:
    msg = QueryMsg.model_validate(
        {"conditions": [{"name": "state", "op": "=", "value": "Running"}], "count": True, "limit": 1}
    )
    assert await query(vms, "VmInstance", msg) == {"success": True, "total": 2}


async def test_reply_with_count(vms: aiosqlite.Connection) -> None:
    msg = QueryMsg.model_validate(
        {
            "conditions": [{"name": "vmNics.l3Network.name", "op": "=", "value": "pub"}],
            "replyWithCount": True,
            "limit": 1,
            "start": 1,
        }
    )
    reply = await query(vms, "VmInstance", msg)
    assert reply["total"] == 2
    assert [inv["uuid"] for inv in reply["inventories"]] == ["vm2"]


async def test_timeout_is_accepted_and_ignored(vms: aiosqlite.Connection) -> None:
    assert await uuids(vms, "Zone", timeout=1800000) == ["z1"]


async def test_tag_union_and_tag_queries(vms: aiosqlite.Connection) -> None:
    assert await uuids(vms, "Tag", ("resourceUuid", "=", "vm1")) == ["t1", "t3"]
    assert await uuids(vms, "SystemTag", ("tag", "~=", "hostname::%")) == ["t1", "t2"]
    assert await uuids(vms, "UserTag", ("tag", "=", "prod"), sortBy="uuid", sortDirection="desc") == [
        "t4",
        "t3",
    ]
    msg = QueryMsg(conditions=[], count=True)
    assert (await query(vms, "Tag", msg))["total"] == 5


async def test_appliance_vms_are_only_appliance_type(vms: aiosqlite.Connection) -> None:
    assert await uuids(vms, "VirtualRouterVm") == []
    assert await uuids(vms, "ApplianceVm") == []
    await vms.execute("UPDATE VmInstance SET type='ApplianceVm' WHERE uuid='vm4'")
    assert await uuids(vms, "ApplianceVm") == ["vm4"]
    assert await uuids(vms, "VirtualRouterVm", ("name", "=", "app1")) == ["vm4"]
    assert await uuids(vms, "VmInstance", ("type", "=", "ApplianceVm")) == ["vm4"]


async def test_values_are_never_sql(vms: aiosqlite.Connection) -> None:
    """A hostile value is compared as data: it matches nothing and the table survives."""
    evil = "x' OR '1'='1'; DROP TABLE VmInstance; --"
    assert await uuids(vms, "VmInstance", ("name", "=", evil)) == []
    assert await uuids(vms, "VmInstance", ("name", "in", evil)) == []
    assert await uuids(vms, "VmInstance", ("__userTag__", "=", evil)) == []
    assert len(await uuids(vms, "VmInstance")) == 4
