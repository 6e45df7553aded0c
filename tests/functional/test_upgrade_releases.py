"""Releases and upgrades for real, on a temporary prefix (never this machine's /opt/zstack-py): three wheels are
built from copies of this checkout — A (a version override), B (a bumped version and one extra no-op
migration), C (a bumped version and a migration that changes data, then raises) — and installed with
``controller.release`` (what scripts/install.sh runs) into their own virtualenvs; the controller runs as a
daemon from ``<prefix>/current`` (``ZSTACK_CTL_MANAGER=daemon``), on a loopback port.

* A → B with ``zstack-ctl upgrade <wheel>``: every Query of the records made under A is the same after, GetVersion
  reports B and B's schema, the backup is kept; going back to A through ``upgrade`` is refused (the database is
  newer than A's code); ``zstack-ctl rollback`` returns to A and its backup.
* A → C: the failing migration is reported; the database file put back is byte for byte the backup (its sha256,
  recorded by the upgrade's restore step before A opens it, is the backup's); A runs again and answers with the
  same data.
* The TLS directory is saved with the upgrade's backup and put back by ``zstack-ctl rollback``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller import release, upgrade
from controller.db.database import migrations
from controller.version import VERSION

REPO = Path(__file__).resolve().parents[2]
A, B, C = "0.90.0", "0.90.1", "0.90.2"
SCHEMA = migrations()[-1][0]
EXTRA = 900  # the test builds' extra migration number
PASSWORD = "upgrade-test-pw"
NOOP = "-- upgrade test build: a migration that changes nothing\nSELECT 1;\n"
FAILING = '''"""upgrade test build: a data migration that changes a row, then fails (the upgrade must roll back)."""


async def migrate(conn):
    await conn.execute("UPDATE Zone SET name = 'changed-by-a-failed-migration'")
    raise RuntimeError("upgrade test: this migration fails on purpose")
'''


def _tree(dst: Path, version: str, migration: tuple[str, str] | None = None) -> Path:
    shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".git", "tests", "docs", "build", "*.egg-info",
                                                             "__pycache__", ".mypy_cache", ".ruff_cache"))
    for rel, pattern in (("pyproject.toml", r'^version = "[^"]+"'),
                         ("kvmagent/contract/version.py", r'^RELEASE = "[^"]+"')):
        f = dst / rel
        text, n = re.subn(pattern, pattern.split(" = ")[0].lstrip("^") + f' = "{version}"', f.read_text(), count=1,
                          flags=re.M)
        assert n == 1, f"{rel}: no version line (release {VERSION})"
        f.write_text(text)
    if migration:
        (dst / "controller" / "db" / "migrations" / migration[0]).write_text(migration[1])
    return dst


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("upgrade-wheels")
    out = {}
    for version, migration in ((A, None), (B, (f"0{EXTRA}_upgrade_test_noop.sql", NOOP)),
                               (C, (f"0{EXTRA}_upgrade_test_fail.py", FAILING))):
        src = _tree(base / f"src-{version}", version, migration)
        out[version] = release.build_wheel(src, base / "dist")
        shutil.rmtree(src)  # the checkout is not needed once the wheel is built
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """A prefix, a data dir and a config: one installation of the controller."""

    def __init__(self, root: Path) -> None:
        self.prefix, self.data = root / "opt", root / "data"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = self.data / "controller.db"
        self.cfg = root / "controller.json"
        self.cfg.write_text(json.dumps({
            "listen_host": "127.0.0.1", "port": self.port, "db_path": str(self.db), "log_dir": str(root / "log"),
            "admin_password": PASSWORD, "agent_package_dir": str(root / "packages"),
            "image_import_dirs": [str(root / "import")]}))
        # The release's own python must import the release's code: no PYTHONPATH (run-heavy sets one).
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZSTACK_CONTROLLER_CONFIG")}
        self.env.update({"ZSTACK_PREFIX": str(self.prefix), "ZSTACK_CTL_MANAGER": "daemon",
                         "ZSTACK_CTL_PIDFILE": str(root / "run" / "controller.pid")})

    def ctl(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.prefix / "current" / "venv" / "bin" / "zstack-ctl"), "--config",
                               str(self.cfg), *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                              check=False)

    def post(self, api: str, session: str | None = None, **body: Any) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if session:
            headers["Authorization"] = f"OAuth {session}"
        req = urllib.request.Request(f"{self.url}/v1/{api}", data=json.dumps(body).encode(), headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=60) as r:
                reply: dict[str, Any] = json.loads(r.read())
        except urllib.error.HTTPError as e:
            reply = json.loads(e.read() or b"{}")
        return reply

    def login(self) -> str:
        reply = self.post("LogInByAccount", accountName="admin", password=PASSWORD)
        assert reply.get("inventory"), reply
        return str(reply["inventory"]["uuid"])


@pytest.fixture
def site(tmp_path: Path, wheels: dict[str, Path]) -> Iterator[Site]:
    s = Site(tmp_path)
    release.switch(s.prefix, release.install(wheels[A], s.prefix))
    start = s.ctl("start", "--wait", "90")
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield s
    finally:
        if (s.prefix / "current").exists():
            s.ctl("stop")


def _estate(s: Site) -> dict[str, Any]:
    """Records of every kind the test makes, through the API."""
    sess = s.login()
    zone = s.post("CreateZone", sess, name="upgrade-zone", description="kept across upgrades")["inventory"]
    s.post("CreateCluster", sess, zoneUuid=zone["uuid"], name="upgrade-cluster", hypervisorType="KVM")
    s.post("CreateInstanceOffering", sess, name="small", cpuNum=1, cpuSpeed=1, memorySize=64 << 20)
    assert s.post("CreateUserTag", sess, resourceType="ZoneVO", resourceUuid=zone["uuid"],
                  tag="kept-by-upgrades").get("inventory")
    assert s.post("UpdateGlobalConfig", sess, category="host", name="ping.interval", value="37").get("inventory")
    return _queries(s, sess)


QUERIES = ("QueryZone", "QueryCluster", "QueryInstanceOffering", "QueryUserTag", "QuerySystemTag",
           "QueryGlobalConfig", "QueryAccount")


def _queries(s: Site, sess: str | None = None) -> dict[str, Any]:
    sess = sess or s.login()
    out = {}
    for q in QUERIES:
        reply = s.post(q, sess, conditions=[])
        assert "inventories" in reply, (q, reply)
        out[q] = sorted(reply["inventories"], key=lambda i: json.dumps(i, sort_keys=True))
    assert out["QueryZone"] and out["QueryCluster"] and out["QueryUserTag"]
    return out


def _version(s: Site) -> dict[str, Any]:
    return s.post("GetVersion")


def _schema(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])


def test_upgrade_keeps_the_data_refuses_a_downgrade_and_rolls_back(site: Site, wheels: dict[str, Path]) -> None:
    s = site
    assert _version(s)["version"] == A and release.current(s.prefix) == s.prefix / "releases" / A
    before = _estate(s)
    t0 = time.monotonic()
    up = s.ctl("upgrade", str(wheels[B]))
    out = up.stdout + up.stderr
    assert up.returncode == 0, out
    assert f"upgrading {A} (schema {SCHEMA}) -> {B} (schema {EXTRA}" in out
    backup = Path(re.search(r"database backed up to (\S+)", out).group(1))  # type: ignore[union-attr]
    assert backup.is_file() and backup.stat().st_mode & 0o777 == 0o600 and _schema(backup) == SCHEMA
    # the TLS directory (the CA that signed the hosts' certificates) is saved with it
    pki, archive = s.data / "pki", Path(f"{backup}.pki.tar")
    assert f"the TLS directory to {archive}" in out and archive.stat().st_mode & 0o777 == 0o600, out
    ca = (pki / "ca.key").read_bytes()
    assert f"schema migrated to version {EXTRA}" in out and f"upgraded to {B}" in out, out
    version = _version(s)
    assert version["version"] == B and version["schemaVersion"] == EXTRA, version
    assert release.current(s.prefix) == s.prefix / "releases" / B
    assert release.previous(s.prefix) == s.prefix / "releases" / A
    assert (s.prefix / "releases" / A / "venv" / "bin" / "python").exists()  # the old release is kept
    assert _queries(s) == before
    assert _schema(s.db) == EXTRA
    status = json.loads(s.ctl("status", "--json").stdout)
    assert status["version"] == B and status["databaseSchemaVersion"] == EXTRA
    print(f"A -> B upgrade took {time.monotonic() - t0:.1f} s")

    # back to A through `upgrade`: its code is older than the database: refused, nothing changed
    down = s.ctl("upgrade", str(s.prefix / "releases" / A))
    assert down.returncode == 1, down.stdout + down.stderr
    assert f"the database has schema version {EXTRA}, newer than the new release's {SCHEMA}" in down.stdout
    assert "pre-flight failed; nothing changed" in down.stdout
    assert _version(s)["version"] == B and release.current(s.prefix) == s.prefix / "releases" / B

    (pki / "ca.key").write_bytes(b"lost by the new release")  # what a rollback must undo
    rb = s.ctl("rollback")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert f"rolled back to {A}" in rb.stdout
    assert f"TLS directory restored from {archive}" in rb.stdout, rb.stdout
    assert (pki / "ca.key").read_bytes() == ca and (pki / "ca.key").stat().st_mode & 0o777 == 0o600
    assert pki.stat().st_mode & 0o777 == 0o700
    assert _version(s)["version"] == A and release.current(s.prefix) == s.prefix / "releases" / A
    assert _schema(s.db) == SCHEMA and _queries(s) == before


def test_failing_migration_rolls_back_to_the_old_release(site: Site, wheels: dict[str, Path]) -> None:
    s = site
    before = _estate(s)
    up = s.ctl("upgrade", str(wheels[C]))
    out = up.stdout + up.stderr
    assert up.returncode == 1, out
    assert "upgrade FAILED while migrating the schema" in out and "this migration fails on purpose" in out, out
    assert f"rolled back: release {A} runs again" in out, out
    backup = Path(re.search(r"database backed up to (\S+)", out).group(1))  # type: ignore[union-attr]
    # Byte for byte: the database file put back, before the old release opened it (which rewrites header
    # bytes), had the backup's sha256 (recorded by the upgrade's restore step; the backup is untouched since).
    backup_sha = hashlib.sha256(backup.read_bytes()).hexdigest()
    failed = upgrade.last_failed_upgrade(s.prefix)
    assert failed is not None and failed["step"] == "migrating the schema", failed
    assert failed["backup"] == str(backup) and failed["backupSha256"] == backup_sha, failed
    assert failed["restoredSha256"] == backup_sha, failed
    assert f"database restored byte for byte from {backup}: sha256 {backup_sha}" in out, out
    with sqlite3.connect(s.db) as c:
        assert c.execute("SELECT COUNT(*) FROM Zone WHERE name='changed-by-a-failed-migration'").fetchone()[0] == 0
    assert _schema(s.db) == SCHEMA
    assert _version(s)["version"] == A and release.current(s.prefix) == s.prefix / "releases" / A
    assert release.previous(s.prefix) is None
    assert _queries(s) == before
    kept = list(s.data.glob("controller.db.failed-upgrade-*"))
    assert len(kept) == 1 and failed["keptFailedDatabase"] == str(kept[0]), kept  # kept for a look
