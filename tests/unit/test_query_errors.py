"""Bad query input raises InvalidArgument (400, SYS.1007) naming the field, the value and what is allowed."""

from __future__ import annotations

from typing import Any

import aiosqlite
import pytest
from test_query_support import db, migrated_template, seed_vms

from controller.errors import InvalidArgument
from controller.query import QueryMsg, get_inventory, parse_query_msg, query

__all__ = ["db", "migrated_template"]


async def _run(db: aiosqlite.Connection, resource: str, **params: Any) -> dict[str, Any]:
    params.setdefault("conditions", [])
    return await query(db, resource, QueryMsg.model_validate(params))


def _cond(name: str, op: str, value: Any = "x") -> list[dict[str, Any]]:
    return [{"name": name, "op": op, "value": value}]


@pytest.mark.parametrize(
    ("resource", "params", "pattern"),
    [
        (
            "VmInstance",
            {"conditions": _cond("nosuch", "=")},
            r"field\[nosuch\].*queryable fields of VmInstance are \["
            r"'uuid', 'name'.*'vmNics\.\*'.*'host\.\*'",
        ),
        (
            "VmInstance",
            {"conditions": _cond("vmNics.nosuch", "=")},
            r"field\[vmNics\.nosuch\].*VmNic has no "
            r"field\[nosuch\].*'ip'",
        ),
        (
            "VmInstance",
            {"conditions": _cond("host.cluster.bogus", "=")},
            r"field\[host\.cluster\.bogus\].*Cluster",
        ),
        ("VmInstance", {"conditions": _cond("vmNics", "=")}, r"field\[vmNics\] is not queryable"),
        ("VmInstance", {"conditions": _cond("name.first", "=")}, r"field\[name\.first\]"),
        ("Host", {"conditions": _cond("password", "=")}, r"field\[password\].*Host has no field\[password\]"),
        ("L2Network", {"conditions": _cond("vlan", "=", "10")}, r"field\[vlan\]"),
        ("GlobalConfig", {"conditions": _cond("__systemTag__", "=")}, r"GlobalConfig has no uuid"),
        (
            "VmInstance",
            {"conditions": _cond("name", "==")},
            r"invalid op\[==\]; valid ops are \[.*'!~=', .*'not in'",
        ),
        (
            "VmInstance",
            {"conditions": _cond("cpuNum", "=", "ten")},
            r"value\['ten'\] of condition field\[cpuNum\] "
            r"is not an integer",
        ),
        (
            "VmInstance",
            {"conditions": _cond("cpuNum", "in", "1,x")},
            r"value\['x'\].*field\[cpuNum\].*integer",
        ),
        ("VmInstance", {"conditions": _cond("host.totalCpuCapacity", ">", "1.5")}, r"\['1\.5'\].*integer"),
        (
            "L3Network",
            {"conditions": _cond("system", "=", "maybe")},
            r"value\['maybe'\].*field\[system\].*boolean",
        ),
        ("VmInstance", {"conditions": _cond("name", "=", None)}, r"field\[name\] with op\[=\] needs a value"),
        (
            "VmInstance",
            {"conditions": _cond("name", "=", ["a", "b"])},
            r"field\[name\] is not a single value",
        ),
        (
            "VmInstance",
            {"conditions": _cond("name", "in", [])},
            r"field\[name\] with op\[in\] needs a non-empty",
        ),
        (
            "VmInstance",
            {"fields": ["uuid", "vmNics"]},
            r"field\[vmNics\] is not a primitive of the inventory "
            r"VmInstance",
        ),
        ("VmInstance", {"fields": ["host.name"]}, r"field\[host\.name\] is not a primitive"),
        ("Host", {"fields": ["password"]}, r"field\[password\] is not a primitive"),
        (
            "VmInstance",
            {"sortBy": "vmNics.ip"},
            r"illegal sortBy\[vmNics\.ip\].*primitive field of the inventory",
        ),
        ("VmInstance", {"sortBy": "nosuch"}, r"illegal sortBy\[nosuch\]"),
    ],
)
async def test_bad_input(db: aiosqlite.Connection, resource: str, params: dict[str, Any], pattern: str) -> None:
    await seed_vms(db)
    with pytest.raises(InvalidArgument, match=pattern) as info:
        await _run(db, resource, **params)
    assert info.value.status == 400 and info.value.code == "SYS.1007"


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({}, r"field\[conditions\] Field required"),
        ({"conditions": [], "limit": -1}, r"field\[limit\].*greater than or equal to 0.*-1"),
        ({"conditions": [], "start": -5}, r"field\[start\]"),
        ({"conditions": [], "sortDirection": "up"}, r"field\[sortDirection\].*'asc' or 'desc'.*'up'"),
        ({"conditions": [], "bogus": 1}, r"field\[bogus\] Extra inputs are not permitted"),
        ({"conditions": [{"name": "a", "op": "=", "value": "b", "x": 1}]}, r"field\[conditions\.0\.x\]"),
        ({"conditions": [{"op": "=", "value": "b"}]}, r"field\[conditions\.0\.name\] Field required"),
    ],
)
def test_bad_message_shape(params: dict[str, Any], pattern: str) -> None:
    with pytest.raises(InvalidArgument, match=pattern):
        parse_query_msg(params)


def test_good_message_defaults() -> None:
    msg = parse_query_msg({"conditions": [], "timeout": 30000, "count": "true"})
    assert (msg.limit, msg.start, msg.count, msg.replyWithCount, msg.sortDirection) == (
        1000,
        0,
        True,
        False,
        "asc",
    )


async def test_unknown_resource(db: aiosqlite.Connection) -> None:
    with pytest.raises(InvalidArgument, match=r"resource\[Nope\] is not queryable.*'VmInstance'"):
        await _run(db, "Nope")
    with pytest.raises(InvalidArgument, match=r"key .* of GlobalConfig must have 2 part"):
        await get_inventory(db, "GlobalConfig", "vm")
