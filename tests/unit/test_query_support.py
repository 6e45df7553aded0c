"""Shared helpers for the query-engine tests: a migrated SQLite database and a small known data set.

Imported by the other ``test_query_*`` modules (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

import controller.db
from controller.query import QueryMsg, query

MIGRATIONS = Path(controller.db.__file__).parent / "migrations"
NOW = "2026-01-30T15:01:03.123Z"
DATED = {"createDate", "lastOpDate"}


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def migrate_sync(conn: sqlite3.Connection) -> None:
    """Apply every numbered migration in order, with foreign keys on (as the controller does)."""
    conn.execute("PRAGMA foreign_keys=ON")
    for f in migration_files():
        conn.executescript(f.read_text())


def table_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]


async def insert(db: aiosqlite.Connection, table: str, **cols: Any) -> None:
    """Insert one row; createDate/lastOpDate default to NOW when the table has them."""
    names = [r[1] for r in await (await db.execute(f'PRAGMA table_info("{table}")')).fetchall()]
    for d in DATED & set(names):
        cols.setdefault(d, NOW)
    sql = f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})'
    await db.execute(sql, list(cols.values()))


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database file per test session; each test gets a copy."""
    path = tmp_path_factory.mktemp("query-template") / "template.db"
    conn = sqlite3.connect(path)
    migrate_sync(conn)
    conn.close()
    return path


@pytest.fixture
async def db(tmp_path: Path, migrated_template: Path) -> AsyncIterator[aiosqlite.Connection]:
    """An empty, migrated database (a file in tmp_path), closed after the test."""
    path = tmp_path / "controller.db"
    shutil.copyfile(migrated_template, path)
    async with aiosqlite.connect(path) as c:
        c.row_factory = aiosqlite.Row  # as the controller sets it: the engine must not depend on it
        await c.execute("PRAGMA foreign_keys=ON")
        yield c


async def seed_infra(db: aiosqlite.Connection) -> None:
    """Zone z1, cluster c1, hosts h1/h2, L2 l2 (NoVlan) + l2v (Vlan 10), L3s pub/priv with ranges."""
    await insert(db, "Zone", uuid="z1", name="zone1")
    await insert(db, "Cluster", uuid="c1", name="cluster1", zoneUuid="z1", hypervisorType="KVM")
    for i in (1, 2):
        await insert(
            db,
            "Host",
            uuid=f"h{i}",
            name=f"host{i}",
            zoneUuid="z1",
            clusterUuid="c1",
            managementIp=f"172.20.0.{i}",
            status="Connected",
            username="root",
            password="secret",
            agentToken="tok",
            agentBootId="boot",
            totalCpuCapacity=8000,
            availableCpuCapacity=4000,
        )
    await insert(
        db,
        "L2Network",
        uuid="l2",
        name="l2-flat",
        zoneUuid="z1",
        physicalInterface="eth0",
        type="L2NoVlanNetwork",
    )
    await insert(
        db,
        "L2Network",
        uuid="l2v",
        name="l2-vlan",
        zoneUuid="z1",
        physicalInterface="eth0",
        type="L2VlanNetwork",
        vlan=10,
    )
    await insert(db, "L2NetworkClusterRef", l2NetworkUuid="l2", clusterUuid="c1")
    await insert(db, "L3Network", uuid="l3a", name="pub", zoneUuid="z1", l2NetworkUuid="l2", system=0)
    await insert(db, "L3Network", uuid="l3b", name="priv", zoneUuid="z1", l2NetworkUuid="l2v", system=1)
    for pos, dns in enumerate(("8.8.8.8", "1.1.1.1")):
        await insert(db, "L3NetworkDns", l3NetworkUuid="l3a", dns=dns, position=1 - pos)
    await insert(
        db,
        "IpRange",
        uuid="r1",
        name="r1",
        l3NetworkUuid="l3a",
        startIp="10.0.0.10",
        endIp="10.0.0.100",
        netmask="255.255.255.0",
        gateway="10.0.0.1",
        networkCidr="10.0.0.0/24",
        startInt=167772170,
        endInt=167772260,
    )
    await insert(db, "NetworkServiceProvider", uuid="nsp1", name="Flat Network Service Provider", type="Flat")
    for t in ("DHCP", "Userdata"):
        await insert(db, "NetworkServiceType", networkServiceProviderUuid="nsp1", type=t)
        await insert(
            db,
            "NetworkServiceL3NetworkRef",
            l3NetworkUuid="l3a",
            networkServiceProviderUuid="nsp1",
            networkServiceType=t,
        )
    await insert(db, "NetworkServiceProviderL2NetworkRef", networkServiceProviderUuid="nsp1", l2NetworkUuid="l2")


VMS: list[dict[str, Any]] = [
    dict(uuid="vm1", name="web1", state="Running", hostUuid="h1", cpuNum=1, memorySize=1024, internalId=1),
    dict(uuid="vm2", name="web2", state="Running", hostUuid="h2", cpuNum=2, memorySize=2048, internalId=2),
    dict(uuid="vm3", name="db1", state="Stopped", hostUuid=None, cpuNum=4, memorySize=4096, internalId=3),
    dict(uuid="vm4", name="app1", state="Created", hostUuid=None, cpuNum=8, memorySize=8192, internalId=4),
]
NICS: list[tuple[str, str, str, str | None, int]] = [  # uuid, vm, l3, ip, deviceId
    ("n1", "vm1", "l3a", "10.0.0.10", 0),
    ("n2", "vm1", "l3b", "192.168.0.10", 1),
    ("n3", "vm2", "l3a", "10.0.0.11", 0),
    ("n4", "vm3", "l3b", None, 0),
]


async def seed_vms(db: aiosqlite.Connection) -> None:
    """seed_infra plus VMS (vm1..vm4), NICS, a root volume per VM and tags:
    system 'hostname::web1' (vm1), 'hostname::web2' (vm2); user 'prod' (vm1, vm2), 'dev' (vm3)."""
    await seed_infra(db)
    for vm in VMS:
        await insert(db, "VmInstance", zoneUuid="z1", clusterUuid="c1", cpuSpeed=1000, **vm)
        await insert(
            db,
            "Volume",
            uuid=f"vol-{vm['uuid']}",
            name=f"root-{vm['name']}",
            vmInstanceUuid=vm["uuid"],
            type="Root",
            deviceId=0,
            size=1 << 30,
        )
    for uuid, vm, l3, ip, dev in NICS:
        await insert(
            db,
            "VmNic",
            uuid=uuid,
            vmInstanceUuid=vm,
            l3NetworkUuid=l3,
            ip=ip,
            deviceId=dev,
            mac=f"fa:00:00:00:00:{uuid[1:]:0>2}",
            internalName=f"vnic.{dev}",
        )
    tags = [
        ("SystemTag", "t1", "vm1", "hostname::web1"),
        ("SystemTag", "t2", "vm2", "hostname::web2"),
        ("UserTag", "t3", "vm1", "prod"),
        ("UserTag", "t4", "vm2", "prod"),
        ("UserTag", "t5", "vm3", "dev"),
    ]
    for table, uuid, res, tag in tags:
        await insert(db, table, uuid=uuid, resourceUuid=res, resourceType="VmInstanceVO", tag=tag)
    await db.commit()


async def uuids(db: aiosqlite.Connection, resource: str, *conds: tuple[str, str, Any], **kw: Any) -> list[str]:
    """The uuids answered by ``Query<resource>`` for (name, op, value) conditions: sorted unless sortBy."""
    msg = QueryMsg.model_validate({"conditions": [dict(name=n, op=o, value=v) for n, o, v in conds], **kw})
    got = [inv["uuid"] for inv in (await query(db, resource, msg))["inventories"]]
    return got if msg.sortBy else sorted(got)  # without sortBy the order is the plan's


def test_migrations_apply_in_order(tmp_path: Path) -> None:
    """The helper applies 0001 then 0002 and the result has the query indexes."""
    assert [f.name[:4] for f in migration_files()][:2] == ["0001", "0002"]
    conn = sqlite3.connect(tmp_path / "x.db")
    migrate_sync(conn)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert {"VmInstance_type", "VmInstance_zone", "VmNic_ip"} <= names
