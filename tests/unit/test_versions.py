"""Release, schema version and agent protocol level: GetVersion, zstack-ctl status, a database newer than the
code refused at open, older agents' facts still parsed, the protocol window (one level behind accepted)."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from apiclient import Api

from controller import ctl
from controller.compute.connect import check_protocol
from controller.compute.deploy import agent_digest
from controller.config import ControllerConfig
from controller.db.database import Database, SchemaTooNew, migrations
from controller.errors import OperationError
from controller.version import PROTOCOL_LEVEL, VERSION
from kvmagent.contract.host import HostFactsReply
from kvmagent.digest import installed_digest

ROOT = Path(__file__).resolve().parents[2]
NEWEST = migrations()[-1][0]


def test_release_is_consistent() -> None:
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == VERSION
    assert VERSION in (ROOT / "CHANGELOG.md").read_text().split("\n## ")[1].splitlines()[0]


async def test_get_version_reports_release_schema_and_protocol(api: Api) -> None:
    status, body = await api.raw("GetVersion", session=False)  # answers without a session, as in 1.0
    assert status == 200, body
    assert body["version"] == VERSION and body["schemaVersion"] == NEWEST >= 7
    assert body["agentProtocol"] == PROTOCOL_LEVEL >= 1


async def test_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zstack.db"
    db = Database(str(path))
    await db.open()
    await db.close()
    with sqlite3.connect(path) as c:
        c.execute("INSERT INTO schema_version (version, name) VALUES (?, '9999_future.sql')", (NEWEST + 1,))
    before = path.read_bytes()
    db = Database(str(path))
    with pytest.raises(SchemaTooNew) as e:
        await db.open()
    await db.close()
    assert f"schema version {NEWEST + 1}, newer than this code's {NEWEST}" in str(e.value)
    with sqlite3.connect(path) as c:  # nothing applied or removed
        assert c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == NEWEST + 1
    assert len(path.read_bytes()) == len(before)


async def test_ctl_status_versions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ControllerConfig(db_path=str(tmp_path / "zstack.db"), log_dir=str(tmp_path))
    assert ctl.versions(cfg) == {"version": VERSION, "schemaVersion": NEWEST, "databaseSchemaVersion": None,
                                 "agentProtocol": PROTOCOL_LEVEL}
    db = Database(cfg.db_path)
    await db.open()
    await db.close()
    assert ctl.versions(cfg)["databaseSchemaVersion"] == NEWEST
    ctl.status(cfg, as_json=False)
    out = capsys.readouterr().out
    assert f"version: {VERSION}" in out and f"schemaVersion: {NEWEST}" in out
    assert f"agentProtocol: {PROTOCOL_LEVEL}" in out


def test_facts_of_an_agent_before_versions_still_parse() -> None:
    old = {"cpuNum": 2, "cpuSpeed": 2000, "cpuModel": "x", "totalMemory": 1 << 30, "libvirtVersion": "9.0.0",
           "qemuVersion": "7.2.0", "hvmCpuFlag": None, "domainType": "qemu", "hypervisor": "KVM"}
    facts = HostFactsReply.model_validate(old)
    assert facts.agentProtocol is None and facts.agentVersion is None and facts.agentDigest is None


def test_protocol_window() -> None:
    host = {"uuid": "h1", "managementIp": "10.0.0.1"}
    assert check_protocol(host, SimpleNamespace(agentProtocol=PROTOCOL_LEVEL, agentVersion=VERSION)) is False
    assert check_protocol(host, SimpleNamespace(agentProtocol=PROTOCOL_LEVEL - 1, agentVersion="x")) is True
    if PROTOCOL_LEVEL == 1:  # an agent that does not report a level is level 0
        assert check_protocol(host, SimpleNamespace(agentProtocol=None, agentVersion=None)) is True
    with pytest.raises(OperationError) as e:
        check_protocol(host, SimpleNamespace(agentProtocol=PROTOCOL_LEVEL - 2, agentVersion="0.0.1"))
    assert f"protocol level {PROTOCOL_LEVEL - 2}" in e.value.details
    assert f"controller level {PROTOCOL_LEVEL}" in e.value.details and "10.0.0.1" in e.value.details
    with pytest.raises(OperationError, match="upgrade the controller"):
        check_protocol(host, SimpleNamespace(agentProtocol=PROTOCOL_LEVEL + 1, agentVersion="9.0.0"))


def test_agent_digest_matches_the_deploy_digest() -> None:
    assert installed_digest() == agent_digest()
