"""The declarative schema matches the migrated database and covers 1.0's query APIs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_query_support import migrate_sync, table_columns

from controller.query import RESOURCES, query_api_names


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    c = sqlite3.connect(Path(tmp_path_factory.mktemp("schema")) / "s.db")
    migrate_sync(c)
    return c


def _cols(conn: sqlite3.Connection, table: str) -> set[str]:
    cols = set(table_columns(conn, table))
    assert cols, f"table {table} does not exist"
    return cols


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_declared_columns_exist(conn: sqlite3.Connection, name: str) -> None:
    r = RESOURCES[name]
    for table in r.union_of or (r.table,):
        cols = _cols(conn, table)
        declared = {r.column_of(f) for f in r.columns}
        assert declared <= cols, f"{name}: {sorted(declared - cols)} missing from {table}"
        assert r.hidden <= cols, f"{name}: hidden {sorted(r.hidden - cols)} missing from {table}"
        assert set(r.key) <= set(r.columns)
        if r.base_filter:
            assert r.base_filter[0] in cols


@pytest.mark.parametrize("name", sorted(n for n, r in RESOURCES.items() if not r.union_of))
def test_every_column_is_exposed_or_hidden_on_purpose(conn: sqlite3.Connection, name: str) -> None:
    r = RESOURCES[name]
    exposed = {r.column_of(f) for f in r.columns}
    assert _cols(conn, r.table) - exposed - r.hidden == set()
    assert not exposed & r.hidden


@pytest.mark.parametrize("name", sorted(RESOURCES))
def test_relations_point_at_real_columns(conn: sqlite3.Connection, name: str) -> None:
    r = RESOURCES[name]
    for child in r.children:
        if child.table is None:
            continue
        cols = _cols(conn, child.table)
        assert child.fk in cols and child.parent_key in r.columns
        assert set(child.order_by) <= cols
        if child.scalar:
            assert child.scalar in cols
        else:
            assert child.resource in RESOURCES and RESOURCES[child.resource].table == child.table
    for ref in r.refs:
        assert ref.resource in RESOURCES
        assert ref.column in {r.column_of(f) for f in r.columns}
        assert ref.target_key in RESOURCES[ref.resource].columns


def test_secrets_are_hidden() -> None:
    assert {"password", "agentToken", "agentBootId"} <= RESOURCES["Host"].hidden
    assert {"username", "password"} <= RESOURCES["BackupStorage"].hidden
    assert "passwordHash" in RESOURCES["Account"].hidden
    assert {"startInt", "endInt"} <= RESOURCES["IpRange"].hidden
    for r in RESOURCES.values():
        assert not {"password", "passwordHash", "agentToken"} & set(r.columns), r.name


def test_api_names() -> None:
    names = query_api_names()
    for api, res in {
        "QueryVmInstance": "VmInstance",
        "QuerySystemTag": "SystemTag",
        "QueryUserTag": "UserTag",
        "QueryTag": "Tag",
        "QueryNetworkServiceL3NetworkRef": "NetworkServiceL3NetworkRef",
        "QueryL2VlanNetwork": "L2VlanNetwork",
        "QueryVirtualRouterVm": "VirtualRouterVm",
        "QueryApplianceVm": "ApplianceVm",
        "QueryGlobalConfig": "GlobalConfig",
        "QueryLocalStorageResourceRef": "LocalStorageResourceRef",
        "QueryZone": "Zone",
        "QueryHost": "Host",
        "QueryCluster": "Cluster",
        "QueryPrimaryStorage": "PrimaryStorage",
        "QueryBackupStorage": "BackupStorage",
        "QuerySftpBackupStorage": "SftpBackupStorage",
        "QueryImage": "Image",
        "QueryL2Network": "L2Network",
        "QueryL3Network": "L3Network",
        "QueryIpRange": "IpRange",
        "QueryVmNic": "VmNic",
        "QueryVolume": "Volume",
        "QueryVolumeSnapshot": "VolumeSnapshot",
        "QueryInstanceOffering": "InstanceOffering",
        "QueryDiskOffering": "DiskOffering",
        "QueryNetworkServiceProvider": "NetworkServiceProvider",
        "QueryAccount": "Account",
    }.items():
        assert names[api] == res


def test_every_queryable_table_is_covered(conn: sqlite3.Connection) -> None:
    """Each table is a resource, a child relation, or internal to the controller (not queryable in 1.0)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    covered = {r.table for r in RESOURCES.values()} | {t for r in RESOURCES.values() for t in r.union_of}
    covered |= {c.table for r in RESOURCES.values() for c in r.children if c.table}
    internal = {"Job", "VmInternalId", "sqlite_sequence", "schema_version", "SecurityGroupHostState",
                # queried through the views ApplianceVmView and VirtualRouterOfferingView (0009_virtual_router)
                "ApplianceVm", "VirtualRouterOffering",
                # shared primary storage bookkeeping (0012_shared_primary_storage): 1.0 had no query of it
                "SharedStorageHostRef", "SharedStorageResourceRef"}
    assert tables - covered - internal == set()
