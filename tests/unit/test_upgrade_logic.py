"""zstack-ctl upgrade/rollback logic without processes: pre-flight findings, the byte-exact restore, the
release links, and the order of steps on a failed upgrade and on rollback (process boundaries — start, stop,
the migration subprocess, the HTTP readiness probe — are replaced by recorders; tests/functional/
test_upgrade_releases.py runs the real thing)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from controller import release, upgrade
from controller.config import ControllerConfig
from controller.db.database import Database, migrations

NEWEST = migrations()[-1][0]


async def _db(path: Path) -> Path:
    db = Database(str(path))
    await db.open()
    await db.close()
    return path


def _job(path: Path, state: str = "Processing") -> None:
    with sqlite3.connect(path) as c:
        c.execute("INSERT INTO Job (uuid, apiName, state, createDate) VALUES ('j1', 'CreateVmInstance', ?, 'now')",
                  (state,))


async def test_preflight_passes_on_a_sound_database(tmp_path: Path) -> None:
    pf = upgrade.preflight(str(await _db(tmp_path / "c.db")), running=True, target_schema=NEWEST)
    assert pf.errors == [] and pf.warnings == [] and pf.hosts == []
    assert pf.schema_version == NEWEST and pf.db_bytes > 0 and pf.free_bytes > 2 * pf.db_bytes


async def test_preflight_refuses_little_disk_running_jobs_and_downgrades(tmp_path: Path) -> None:
    db = await _db(tmp_path / "c.db")
    _job(db)
    size = upgrade.db_bytes(db)
    pf = upgrade.preflight(str(db), running=True, target_schema=NEWEST - 1, free_bytes=2 * size - 1)
    assert len(pf.errors) == 3, pf.errors
    assert f"is {2 * size - 1} bytes, less than twice the database's {size} bytes" in pf.errors[0]
    assert f"schema version {NEWEST}, newer than the new release's {NEWEST - 1}" in pf.errors[1]
    assert "1 API job(s) still running: CreateVmInstance (j1)" in pf.errors[2]
    # a job left Processing by a stopped controller is only a warning (failed at the next start)
    pf = upgrade.preflight(str(db), running=False, target_schema=NEWEST, free_bytes=2 * size)
    assert pf.errors == [] and "left Processing" in pf.warnings[0]


async def test_preflight_lists_the_hosts_and_their_agents(tmp_path: Path) -> None:
    db = await _db(tmp_path / "c.db")
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO Zone (uuid, name, createDate, lastOpDate) VALUES ('z', 'z', 'now', 'now')")
        c.execute("INSERT INTO Cluster (uuid, name, hypervisorType, zoneUuid, createDate, lastOpDate) "
                  "VALUES ('c', 'c', 'KVM', 'z', 'now', 'now')")
        for uuid, ip, status, agent in (("h1", "10.0.0.1", "Connected", "0.2.0"), ("h2", "10.0.0.2", "Disconnected",
                                                                                    None)):
            c.execute("INSERT INTO Host (uuid, name, zoneUuid, clusterUuid, managementIp, status, agentVersion, "
                      "createDate, lastOpDate) VALUES (?, ?, 'z', 'c', ?, ?, ?, 'now', 'now')",
                      (uuid, f"host-{uuid}", ip, status, agent))
    pf = upgrade.preflight(str(db), running=False)
    assert pf.errors == [] and [(h["name"], h["managementIp"], h["status"], h["agentVersion"]) for h in pf.hosts] \
        == [("host-h1", "10.0.0.1", "Connected", "0.2.0"), ("host-h2", "10.0.0.2", "Disconnected", None)]
    lines: list[str] = []
    upgrade.print_preflight(pf, lines.append)
    assert "  host host-h1 10.0.0.1 [h1]: Connected, agent 0.2.0" in lines
    assert "  host host-h2 10.0.0.2 [h2]: Disconnected, agent unknown" in lines


def test_preflight_reads_a_database_from_before_agent_versions(tmp_path: Path) -> None:
    """A 0.1.0 database (schema 2) has no Host.agentVersion: its hosts are listed with an unknown agent."""
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as c:
        c.executescript("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT);"
                        "INSERT INTO schema_version VALUES (1, '0001_initial.sql'), (2, '0002_query_indexes.sql');"
                        "CREATE TABLE Job (uuid TEXT, apiName TEXT, state TEXT, createDate TEXT);"
                        "CREATE TABLE Host (uuid TEXT, name TEXT, managementIp TEXT, status TEXT);"
                        "INSERT INTO Host VALUES ('h1', 'host-1', '10.0.0.1', 'Connected');")
    pf = upgrade.preflight(str(db), running=True, target_schema=NEWEST)
    assert pf.errors == [] and pf.schema_version == 2, pf.errors
    assert pf.hosts == [{"uuid": "h1", "name": "host-1", "managementIp": "10.0.0.1", "status": "Connected",
                         "agentVersion": None}]


def test_pki_archive_round_trip_is_private_and_refuses_foreign_members(tmp_path: Path) -> None:
    import os
    import stat
    import tarfile

    from controller import ctlbackup

    assert ctlbackup.backup_pki(tmp_path / "no-pki", tmp_path / "b.db") is None
    pki = tmp_path / "pki"
    (pki / "hosts").mkdir(parents=True)
    (pki / "ca.key").write_bytes(b"key")
    (pki / "hosts" / "h1.crt").write_bytes(b"cert")
    os.chmod(pki / "hosts" / "h1.crt", 0o644)
    archive = ctlbackup.backup_pki(pki, tmp_path / "b.db")
    assert archive == tmp_path / "b.db.pki.tar" and stat.S_IMODE(archive.stat().st_mode) == 0o600
    with pytest.raises(ctlbackup.BackupError):  # never overwritten
        ctlbackup.backup_pki(pki, tmp_path / "b.db")
    target = tmp_path / "restored" / "pki"
    target.parent.mkdir()
    assert ctlbackup.restore_pki(archive, target) is None
    assert (target / "ca.key").read_bytes() == b"key" and (target / "hosts" / "h1.crt").read_bytes() == b"cert"
    assert {stat.S_IMODE(p.stat().st_mode) for p in target.rglob("*") if p.is_file()} == {0o600}
    assert {stat.S_IMODE(p.stat().st_mode) for p in (target, target / "hosts")} == {0o700}
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(pki / "ca.key", arcname="pki/../../escaped")
    with pytest.raises(ctlbackup.BackupError, match="unexpected member"):
        ctlbackup.restore_pki(evil, target)
    assert (target / "ca.key").read_bytes() == b"key" and not (tmp_path / "escaped").exists()


def test_preflight_refuses_a_missing_or_damaged_database(tmp_path: Path) -> None:
    assert "no controller database" in upgrade.preflight(str(tmp_path / "none.db"), running=False).errors[0]
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\0" + b"\x07" * 4000)
    errors = upgrade.preflight(str(bad), running=False).errors
    assert len(errors) == 1 and ("integrity" in errors[0] or "cannot be read" in errors[0]), errors


def test_restore_exact_is_byte_for_byte_and_drops_the_failed_wal(tmp_path: Path) -> None:
    backup = tmp_path / "backup.db"
    backup.write_bytes(b"backup bytes")
    db = tmp_path / "c.db"
    db.write_bytes(b"migrated bytes")
    Path(f"{db}-wal").write_bytes(b"wal of the failed migration")
    kept = upgrade.restore_exact(str(db), backup)
    assert db.read_bytes() == b"backup bytes" and db.stat().st_mode & 0o777 == 0o600
    assert not Path(f"{db}-wal").exists()
    assert kept is not None and kept.read_bytes() == b"migrated bytes"
    assert Path(f"{kept}-wal").read_bytes() == b"wal of the failed migration"


def _release(p: Path, version: str) -> Path:
    rel = p / "releases" / version
    (rel / "venv" / "bin").mkdir(parents=True)
    (rel / "venv" / "bin" / "python").touch()
    (rel / "release.json").write_text(json.dumps({"version": version, "schemaVersion": NEWEST,
                                                  "agentProtocol": 1}))
    return rel


def test_switch_keeps_previous_and_links_are_relative(tmp_path: Path) -> None:
    a, b = _release(tmp_path, "1.0"), _release(tmp_path, "1.1")
    assert release.switch(tmp_path, a) is None and release.current(tmp_path) == a
    assert release.switch(tmp_path, b) == a
    assert release.current(tmp_path) == b and release.previous(tmp_path) == a
    assert (tmp_path / "current").readlink() == Path("releases/1.1")
    with pytest.raises(release.ReleaseError, match="not an installed release"):
        release.switch(tmp_path, tmp_path / "releases" / "nothing")


def test_wheel_version() -> None:
    assert release.wheel_version(Path("/x/zstack_py-0.3.0-py3-none-any.whl")) == "0.3.0"
    with pytest.raises(release.ReleaseError, match="not a zstack-py wheel"):
        release.wheel_version(Path("other-1.0-py3-none-any.whl"))


class Machine:
    """Records the process-level steps; ``fail_at`` makes one of them fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, p: Path, fail_at: str = "") -> None:
        self.steps: list[str] = []
        self.running: str | None = "1.0"
        self.p, self.fail_at = p, fail_at
        monkeypatch.setattr(upgrade, "migrate", self.migrate)
        self.controls = upgrade.Controls(start=self.start, stop=self.stop, healthy=lambda cfg: self.running is not None,
                                         pid=lambda: None, version=lambda cfg: self.running)

    def stop(self, cfg: Any) -> int:
        self.steps.append("stop")
        self.running = None
        return 0

    def start(self, cfg: Any, config_path: Any, wait: float, python: str | None) -> int:
        version = Path(str(python)).parents[2].name
        self.steps.append(f"start {version}")
        assert release.current(self.p) == self.p / "releases" / version  # the unit runs `current`
        if self.fail_at == f"start {version}":
            return 1
        self.running = version
        return 0

    def migrate(self, rel: Path, db_path: str) -> int:
        self.steps.append(f"migrate {rel.name}")
        with sqlite3.connect(db_path) as c:
            c.execute("CREATE TABLE Migrated (x)")
        if self.fail_at == "migrate":
            raise upgrade.UpgradeFailed("the schema migration failed: RuntimeError: boom")
        return NEWEST


async def _setup(tmp_path: Path) -> tuple[ControllerConfig, Path, Path, Path]:
    p = tmp_path / "prefix"
    a, b = _release(p, "1.0"), _release(p, "1.1")
    release.switch(p, a)
    db = await _db(tmp_path / "data" / "c.db")
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO Zone (uuid, name, state, createDate, lastOpDate) VALUES ('z', 'zone', 'Enabled', "
                  "'now', 'now')")
    return ControllerConfig(db_path=str(db), log_dir=str(tmp_path)), p, a, b


def _dump_names(db: str) -> list[str]:
    return [str(f) for f in Path(db).parent.iterdir()]


def _dump(db: str) -> list[str]:
    with sqlite3.connect(db) as c:
        return list(c.iterdump())


async def test_failed_migration_restores_the_backup_and_starts_the_old_release(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, p, a, b = await _setup(tmp_path)
    before = _dump(cfg.db_path)
    m = Machine(monkeypatch, p, fail_at="migrate")
    lines: list[str] = []
    assert upgrade.upgrade(m.controls, cfg, None, str(b), p=p, out=lines.append) == 1
    assert m.steps == ["stop", "migrate 1.1", "stop", "start 1.0"]
    assert release.current(p) == a and release.previous(p) is None and m.running == "1.0"
    assert _dump(cfg.db_path) == before  # no Migrated table: the backup is back
    text = "\n".join(lines)
    assert "upgrade FAILED while migrating the schema: the schema migration failed: RuntimeError: boom" in text
    assert "rolled back: release 1.0 runs again" in text
    assert not (p / "upgrade.json").exists()
    backups = list((Path(cfg.db_path).parent / "backups").glob("upgrade-1.0-to-1.1-*.db"))
    assert len(backups) == 1 and _dump(str(backups[0])) == before


async def test_new_release_not_answering_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, p, a, b = await _setup(tmp_path)
    m = Machine(monkeypatch, p, fail_at="start 1.1")
    lines: list[str] = []
    assert upgrade.upgrade(m.controls, cfg, None, str(b), p=p, out=lines.append) == 1
    assert m.steps == ["stop", "migrate 1.1", "start 1.1", "stop", "start 1.0"]
    assert release.current(p) == a and "while starting release 1.1" in "\n".join(lines)


async def test_preflight_failure_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, p, a, b = await _setup(tmp_path)
    _job(Path(cfg.db_path))
    m = Machine(monkeypatch, p)
    lines: list[str] = []
    assert upgrade.upgrade(m.controls, cfg, None, str(b), p=p, out=lines.append) == 1
    assert m.steps == [] and release.current(p) == a
    assert "pre-flight failed; nothing changed" in lines[-1]
    assert not (Path(cfg.db_path).parent / "backups").exists()


async def test_upgrade_then_rollback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, p, a, b = await _setup(tmp_path)
    before = _dump(cfg.db_path)
    m = Machine(monkeypatch, p)
    lines: list[str] = []
    assert upgrade.upgrade(m.controls, cfg, None, str(b), p=p, out=lines.append) == 0, lines
    assert m.steps == ["stop", "migrate 1.1", "start 1.1"]
    assert release.current(p) == b and release.previous(p) == a
    rec = upgrade.last_upgrade(p)
    assert rec is not None and rec["state"] == "upgraded" and rec["from"] == "1.0" and rec["to"] == "1.1"
    assert "Migrated" in "\n".join(_dump(cfg.db_path))
    m.steps.clear()
    assert upgrade.rollback(m.controls, cfg, None, p=p, out=lines.append) == 0, lines
    assert m.steps == ["stop", "start 1.0"] and release.current(p) == a
    assert _dump(cfg.db_path) == before
    rec = upgrade.last_upgrade(p)
    assert rec is not None and rec["state"] == "rolled back" and rec["keptDatabase"] in _dump_names(cfg.db_path)
    assert upgrade.rollback(m.controls, cfg, None, p=p, out=lines.append) == 1  # only once
    assert "no upgrade to roll back" in lines[-1]


async def test_upgrade_needs_a_release_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ControllerConfig(db_path=str(await _db(tmp_path / "c.db")), log_dir=str(tmp_path))
    m = Machine(monkeypatch, tmp_path / "empty")
    lines: list[str] = []
    assert upgrade.upgrade(m.controls, cfg, None, str(tmp_path), p=tmp_path / "empty", out=lines.append) == 2
    assert "no release is installed" in lines[0]
