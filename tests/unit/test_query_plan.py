"""Queries over 100,000 VMs (with a NIC each) are answered through indexes: checked on EXPLAIN QUERY PLAN
and on the exact rows returned."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from test_query_support import NOW, migrate_sync

from controller.query import RESOURCES, QueryMsg, query
from controller.query.compiler import compile_query

N_VMS = 100_000
N_HOSTS = 100


def build_big_db(path: Path, n_vms: int = N_VMS) -> None:
    """A migrated database with 1 zone, N_HOSTS hosts, 2 L3s and ``n_vms`` VMs, each with one NIC
    (ip 10.x.y.z from its index), a root volume, every 1000th VM Running on host ``h<i // 1000>``
    and every 10,000th carrying system tag ``hostname::vm<i>``."""
    conn = sqlite3.connect(path)
    migrate_sync(conn)
    d = (NOW, NOW)
    conn.execute("INSERT INTO Zone (uuid, name, createDate, lastOpDate) VALUES ('z1', 'zone1', ?, ?)", d)
    conn.execute(
        "INSERT INTO Cluster (uuid, name, zoneUuid, hypervisorType, createDate, lastOpDate) "
        "VALUES ('c1', 'cluster1', 'z1', 'KVM', ?, ?)",
        d,
    )
    conn.executemany(
        "INSERT INTO Host (uuid, name, zoneUuid, clusterUuid, managementIp, createDate, lastOpDate) "
        "VALUES (?, ?, 'z1', 'c1', ?, ?, ?)",
        [(f"h{i}", f"host{i}", f"172.20.{i // 250}.{i % 250}", *d) for i in range(N_HOSTS)],
    )
    conn.execute(
        "INSERT INTO L2Network (uuid, name, zoneUuid, physicalInterface, type, createDate, lastOpDate) "
        "VALUES ('l2', 'l2', 'z1', 'eth0', 'L2NoVlanNetwork', ?, ?)",
        d,
    )
    conn.executemany(
        "INSERT INTO L3Network (uuid, name, zoneUuid, l2NetworkUuid, createDate, lastOpDate) "
        "VALUES (?, ?, 'z1', 'l2', ?, ?)",
        [("l3a", "pub", *d), ("l3b", "priv", *d)],
    )
    conn.executemany(
        "INSERT INTO VmInstance (uuid, name, zoneUuid, clusterUuid, hostUuid, state, memorySize, cpuNum, "
        "cpuSpeed, internalId, createDate, lastOpDate) VALUES (?, ?, 'z1', 'c1', ?, ?, 1024, 1, 1000, ?, ?, ?)",
        [
            (
                vm_uuid(i),
                f"vm{i}",
                f"h{(i // 1000) % N_HOSTS}" if i % 1000 == 0 else None,
                "Running" if i % 1000 == 0 else "Stopped",
                i,
                *d,
            )
            for i in range(n_vms)
        ],
    )
    conn.executemany(
        "INSERT INTO VmNic (uuid, vmInstanceUuid, l3NetworkUuid, ip, mac, internalName, deviceId, createDate, "
        "lastOpDate) VALUES (?, ?, ?, ?, ?, 'vnic', 0, ?, ?)",
        [(f"nic{i:08d}", vm_uuid(i), "l3b" if i % 2 else "l3a", nic_ip(i), f"fa:{i:010x}", *d) for i in range(n_vms)],
    )
    conn.executemany(
        "INSERT INTO Volume (uuid, name, vmInstanceUuid, type, deviceId, createDate, lastOpDate) "
        "VALUES (?, ?, ?, 'Root', 0, ?, ?)",
        [(f"vol{i:08d}", f"root{i}", vm_uuid(i), *d) for i in range(n_vms)],
    )
    conn.executemany(
        "INSERT INTO SystemTag (uuid, resourceUuid, resourceType, tag, createDate, lastOpDate) "
        "VALUES (?, ?, 'VmInstanceVO', ?, ?, ?)",
        [(f"tag{i}", vm_uuid(i), f"hostname::vm{i}", *d) for i in range(0, n_vms, 10_000)],
    )
    conn.commit()
    conn.close()


def vm_uuid(i: int) -> str:
    return f"{i:032x}"


def nic_ip(i: int) -> str:
    return f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"


@pytest.fixture(scope="module")
def big_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.db"
    build_big_db(path)
    return path


@pytest.fixture
async def big(big_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    async with aiosqlite.connect(big_path) as c:
        yield c


async def plan(db: aiosqlite.Connection, sql: str, params: list[Any]) -> list[str]:
    async with db.execute(f"EXPLAIN QUERY PLAN {sql}", params) as cur:
        return [row[3] for row in await cur.fetchall()]


def _msg(*conds: tuple[str, str, Any], **kw: Any) -> QueryMsg:
    return QueryMsg.model_validate({"conditions": [dict(name=n, op=o, value=v) for n, o, v in conds], **kw})


INDEXED = [
    ("VmInstance", _msg(("uuid", "=", vm_uuid(4242))), [vm_uuid(4242)]),
    ("VmInstance", _msg(("state", "=", "Running"), limit=3), [vm_uuid(0), vm_uuid(1000), vm_uuid(2000)]),
    ("VmInstance", _msg(("name", "=", "vm77777")), [vm_uuid(77777)]),
    ("VmInstance", _msg(("name", "in", "vm5,vm6")), [vm_uuid(5), vm_uuid(6)]),
    ("VmInstance", _msg(("hostUuid", "=", "h7")), [vm_uuid(7000)]),
    ("VmInstance", _msg(("vmNics.ip", "=", nic_ip(31337))), [vm_uuid(31337)]),
    ("VmInstance", _msg(("host.name", "=", "host3")), [vm_uuid(3000)]),
    ("VmInstance", _msg(("__systemTag__", "=", "hostname::vm20000")), [vm_uuid(20000)]),
    ("VmInstance", _msg(("zoneUuid", "=", "nope")), []),
    ("VmInstance", _msg(("allVolumes.name", "=", "root99999")), [vm_uuid(99999)]),
    ("ApplianceVm", _msg(), []),
    ("VmNic", _msg(("vmInstanceUuid", "=", vm_uuid(12))), ["nic00000012"]),
    ("VmNic", _msg(("vmInstance.name", "=", "vm12")), ["nic00000012"]),
    ("Volume", _msg(("vmInstanceUuid", "=", vm_uuid(12))), ["vol00000012"]),
    ("SystemTag", _msg(("resourceUuid", "=", vm_uuid(30000))), ["tag30000"]),
    ("Tag", _msg(("uuid", "=", "tag40000")), ["tag40000"]),
    ("VmInstance", _msg(("vmNics.l3Network.name", "=", "pub"), ("name", "=", "vm4")), [vm_uuid(4)]),
]


@pytest.mark.parametrize(
    ("resource", "msg", "expected"),
    INDEXED,
    ids=[f"{r}:{','.join(c.name + c.op for c in m.conditions) or 'all'}" for r, m, _ in INDEXED],
)
async def test_indexed_query_plans(
    big: aiosqlite.Connection, resource: str, msg: QueryMsg, expected: list[str]
) -> None:
    compiled = compile_query(RESOURCES[resource], msg)
    assert compiled.sql is not None
    steps = await plan(big, compiled.sql, compiled.params)
    assert not [s for s in steps if s.startswith("SCAN")], steps
    assert any("USING" in s and "INDEX" in s for s in steps), steps
    reply = await query(big, resource, msg)
    assert sorted(inv["uuid"] for inv in reply["inventories"]) == expected


async def test_vm_with_host_condition_uses_host_index(big: aiosqlite.Connection) -> None:
    compiled = compile_query(RESOURCES["VmInstance"], _msg(("hostUuid", "=", "h7")))
    assert compiled.sql is not None
    assert any("VmInstance_host" in s for s in await plan(big, compiled.sql, compiled.params))


async def test_child_fetch_uses_fk_index(big: aiosqlite.Connection) -> None:
    statements: list[str] = []
    await big.set_trace_callback(statements.append)
    reply = await query(big, "VmInstance", _msg(("state", "=", "Running")))
    await big.set_trace_callback(None)
    assert len(reply["inventories"]) == 100
    assert all(inv["vmNics"][0]["ip"] == nic_ip(int(inv["uuid"], 16)) for inv in reply["inventories"])
    children = [s for s in statements if '"__fk"' in s]
    assert len(children) == 2  # vmNics, allVolumes: one statement each for the whole page
    for sql in children:
        steps = await plan(big, sql, [])
        assert not [s for s in steps if s.startswith("SCAN")], steps


async def test_count_over_100k(big: aiosqlite.Connection) -> None:
    reply = await query(big, "VmInstance", _msg(("state", "=", "Stopped"), count=True))
    assert reply == {"success": True, "total": N_VMS - N_VMS // 1000}
    reply = await query(
        big,
        "VmInstance",
        _msg(("vmNics.l3Network.name", "=", "pub"), replyWithCount=True, limit=2, fields=["uuid"]),
    )
    assert reply == {
        "success": True,
        "total": N_VMS // 2,
        "inventories": [{"uuid": vm_uuid(0)}, {"uuid": vm_uuid(2)}],
    }


async def test_live_feed_looks_go_through_indexes(big: aiosqlite.Connection) -> None:
    """The web console's live feed reads these several times a second: no table scan over 100k VMs."""
    from controller.ui.live import JOB_CHANGES, VM_CHANGES

    vm_plan = await plan(big, VM_CHANGES, [NOW])
    assert vm_plan == ["SEARCH VmInstance USING INDEX VmInstance_lastOp (lastOpDate>?)"], vm_plan
    job_plan = " | ".join(await plan(big, JOB_CHANGES, [NOW, NOW]))
    assert "SCAN Job" not in job_plan and "Job_created" in job_plan and "Job_finished" in job_plan, job_plan
