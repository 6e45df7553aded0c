"""``zstack-ctl upgrade <wheel | release dir>`` and ``zstack-ctl rollback``: move the controller between releases
installed side by side (:mod:`controller.release`) without losing its database.

Upgrade, in order (any failure after the backup rolls everything back):

1. install the new release beside the one in use (from a wheel; or take an installed release directory), while
   the old controller still runs;
2. pre-flight (:func:`preflight`): SQLite ``integrity_check``, free disk at least twice the database, no API job
   running, the database's schema not newer than the new release's; the hosts and their agents are listed;
3. a consistent online backup of the database (:func:`controller.ctlbackup.backup`), its path and sha256 printed
   and kept, with the TLS directory (``pki/``: the CA and certificates) beside it;
4. stop the controller, point ``current`` at the new release, migrate the schema with the new release's code
   (each migration in its own transaction, ``controller.db.database``), start it, and verify readiness: ``/readyz``
   answers and ``GetVersion`` reports the new release;
5. on any failure: stop what runs, put the backup back byte for byte (the failed database is kept beside it as
   ``<db>.failed-upgrade-<time>``) and check that before the old release opens it: the restored file's sha256
   must be the one the backup had when it was taken (both recorded in ``<prefix>/last-failed-upgrade.json``);
   the TLS directory saved with the backup goes back too; point ``current`` back, start the previous release,
   check it answers, and say which step failed. Exit status 1.

``zstack-ctl rollback`` returns from the last upgrade explicitly: the previous release and the backup taken
before that upgrade (changes made since are not in it: the database they are in is kept aside).
The last upgrade is recorded in ``<prefix>/upgrade.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import ctlbackup, release
from controller.config import ControllerConfig
from controller.db.database import FILE_MODE

Out = Callable[[str], None]
# Run by the NEW release's python (``-P``: not the working directory's code): Database.open applies the
# pending migrations, each in one transaction.
_MIGRATE = ("import asyncio, sys\n"
            "from controller.db.database import Database\n"
            "async def main():\n"
            "    db = Database(sys.argv[1], readers=0)\n"
            "    try:\n"
            "        await db.open()\n"
            "    finally:\n"  # a connection left open keeps its thread, and the process, alive
            "        await db.close()\n"
            "    print(db.schema_version)\n"
            "asyncio.run(main())\n")


class UpgradeFailed(Exception):
    pass


@dataclass
class Controls:
    """How the controller process is managed and probed (``zstack-ctl``'s start/stop/readiness, passed in by
    ``controller.ctl``): start(cfg, config path, wait, python) and stop(cfg) return an exit status."""

    start: Callable[[ControllerConfig, str | None, float, str | None], int]
    stop: Callable[[ControllerConfig], int]
    healthy: Callable[[ControllerConfig], bool]
    pid: Callable[[], int | None]
    version: Callable[[ControllerConfig], str | None]


@dataclass
class Preflight:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    db_bytes: int = 0
    free_bytes: int = 0
    schema_version: int = 0


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def preflight(db_path: str, *, running: bool, target_schema: int | None = None,
              free_bytes: int | None = None) -> Preflight:
    """What must hold before an upgrade touches anything. ``free_bytes``: the free space to judge (default:
    what the database's file system has)."""
    pf = Preflight()
    db = Path(db_path)
    if not db.is_file():
        pf.errors.append(f"no controller database at {db} (start the controller once, or check db_path)")
        return pf
    pf.db_bytes = db_bytes(db)
    pf.free_bytes = shutil.disk_usage(db.parent).free if free_bytes is None else free_bytes
    if pf.free_bytes < 2 * pf.db_bytes:
        pf.errors.append(f"free disk on {db.parent} is {pf.free_bytes} bytes, less than twice the database's "
                         f"{pf.db_bytes} bytes (the backup and the migration need that much)")
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            conn.execute("PRAGMA query_only=ON")
            check = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            if check != ["ok"]:
                pf.errors.append(f"{db} fails SQLite's integrity check: {'; '.join(map(str, check[:5]))}")
                return pf
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            pf.schema_version = int(row[0] or 0)
            jobs = conn.execute("SELECT apiName, uuid FROM Job WHERE state='Processing' ORDER BY createDate"
                                ).fetchall()
            # agentVersion: since schema 7 (a 0.1.0 database has no such column: its agents are unknown)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(Host)")}
            agent = "agentVersion" if "agentVersion" in columns else "NULL"
            pf.hosts = [{"uuid": r[0], "name": r[1], "managementIp": r[2], "status": r[3], "agentVersion": r[4]}
                        for r in conn.execute(f"SELECT uuid, name, managementIp, status, {agent} FROM Host "
                                              "ORDER BY name, uuid")]
    except sqlite3.Error as e:
        pf.errors.append(f"{db} cannot be read as a controller database: {e}")
        return pf
    if target_schema is not None and pf.schema_version > target_schema:
        pf.errors.append(f"the database has schema version {pf.schema_version}, newer than the new release's "
                         f"{target_schema}: a downgrade is refused (restore a backup taken before with the "
                         "release that made it)")
    listed = ", ".join(f"{a} ({u})" for a, u in jobs[:10])
    if jobs and running:
        pf.errors.append(f"{len(jobs)} API job(s) still running: {listed}; wait for them to finish")
    elif jobs:
        pf.warnings.append(f"{len(jobs)} job(s) were left Processing by a controller that stopped: {listed}; "
                           "they are marked Failed at the next start")
    return pf


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore_exact(db_path: str, backup: Path, keep_as: str = "failed-upgrade") -> Path | None:
    """Put ``backup`` back as the (stopped) controller's database, byte for byte. The database it replaces
    (with its -wal/-shm: they must never meet the restored file) is kept as ``<db>.<keep_as>-<time>``;
    returns that path (None when there was none)."""
    db = Path(db_path)
    tmp = db.with_name(f".{db.name}.restoring")
    shutil.copyfile(backup, tmp)
    os.chmod(tmp, FILE_MODE)
    _fsync(tmp)
    kept = ctlbackup.set_aside(db, keep_as)
    os.replace(tmp, db)
    _fsync(db.parent)
    return kept


def migrate(rel: Path, db_path: str, timeout: float = 1800) -> int:
    """Migrate the database with ``rel``'s code; returns the schema version (UpgradeFailed otherwise)."""
    try:
        cp = subprocess.run([str(release.python(rel)), "-P", "-c", _MIGRATE, db_path], capture_output=True, text=True,
                            timeout=timeout, check=False, env=release.clean_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UpgradeFailed(f"the schema migration did not run: {e}") from e
    if cp.returncode != 0:
        tail = (cp.stderr or cp.stdout).strip().splitlines()[-6:]
        raise UpgradeFailed("the schema migration failed: " + " | ".join(tail))
    return int(cp.stdout.strip().splitlines()[-1])


def start_release(c: Controls, cfg: ControllerConfig, config_path: str | None, rel: Path, version: str,
                  wait: float) -> None:
    """Start ``rel`` (``current`` already points at it) and check it answers as ``version``."""
    if c.start(cfg, config_path, wait, str(release.python(rel))) != 0:
        raise UpgradeFailed(f"release {version} did not become ready within {wait:.0f} s "
                            f"(see {cfg.log_dir}/controller.log)")
    got = c.version(cfg)
    if got != version:
        raise UpgradeFailed(f"GetVersion answers {got!r}, expected {version!r}")


def _stop(c: Controls, cfg: ControllerConfig) -> None:
    c.stop(cfg)
    if c.healthy(cfg) or c.pid() is not None:
        raise UpgradeFailed("the controller did not stop")


def _restore_links(p: Path, old: Path, prev: Path | None) -> None:
    release.switch(p, old)
    if prev is not None:
        release._set_link(p, "previous", prev)
    else:
        (p / "previous").unlink(missing_ok=True)


def _record(p: Path, data: dict[str, Any]) -> None:
    tmp = p / ".upgrade.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, p / "upgrade.json")


def last_upgrade(p: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((p / "upgrade.json").read_text()))
    except (OSError, ValueError):
        return None


def print_preflight(pf: Preflight, out: Out) -> None:
    out(f"pre-flight: database {pf.db_bytes} bytes (schema {pf.schema_version}), {pf.free_bytes} bytes free")
    for h in pf.hosts:
        out(f"  host {h['name']} {h['managementIp']} [{h['uuid']}]: {h['status']}, agent "
            f"{h['agentVersion'] or 'unknown'}")
    if not pf.hosts:
        out("  no hosts")
    for w in pf.warnings:
        out(f"  warning: {w}")
    for e in pf.errors:
        out(f"  FAILED: {e}")


def upgrade(c: Controls, cfg: ControllerConfig, config_path: str | None, source: str, *, p: Path | None = None,
            pip_args: list[str] | None = None, wait: float = 90.0, out: Out = print) -> int:
    p = p or release.prefix()
    old = release.current(p)
    if old is None:
        out(f"upgrade: no release is installed under {p} (no {p / 'current'}): a development install "
            "(install.sh --dev) is updated by running the installer again")
        return 2
    t0 = time.monotonic()
    try:
        old_info = release.info(old)
        src = Path(source)
        new = src.resolve() if src.is_dir() else release.install(src, p, pip_args=pip_args, log=out)
        new_info = release.info(new)
    except (release.ReleaseError, OSError) as e:
        out(f"upgrade: {e}; nothing changed")
        return 1
    if new == old:
        out(f"upgrade: release {new_info['version']} ({new}) is already the one in use; nothing to do")
        return 1
    frm, to = str(old_info["version"]), str(new_info["version"])
    out(f"upgrading {frm} (schema {old_info['schemaVersion']}) -> {to} (schema {new_info['schemaVersion']}, "
        f"agent protocol {new_info['agentProtocol']})")
    running = c.healthy(cfg)
    pf = preflight(cfg.db_path, running=running, target_schema=int(new_info["schemaVersion"]))
    print_preflight(pf, out)
    if pf.errors:
        out("upgrade: pre-flight failed; nothing changed")
        return 1
    from controller.ctlbackup import BackupError, backup

    try:
        name = f"upgrade-{frm}-to-{to}-{ctlbackup.stamp()}.db"
        bk = backup(cfg.db_path, str(Path(cfg.db_path).parent / "backups" / name))
        bk_sha = release.sha256(bk)
        pki = ctlbackup.backup_pki(ctlbackup.pki_dir(cfg), bk)
    except (BackupError, OSError) as e:
        out(f"upgrade: the database backup failed ({e}); nothing changed")
        return 1
    out(f"database backed up to {bk} (sha256 {bk_sha})" + (f", the TLS directory to {pki}" if pki else ""))
    prev = release.previous(p)
    step = "stopping the controller"
    down = time.monotonic()
    try:
        _stop(c, cfg)
        step = f"switching {p / 'current'} to {new}"
        release.switch(p, new)
        step = "migrating the schema"
        version = migrate(new, cfg.db_path)
        out(f"schema migrated to version {version}")
        step = f"starting release {to}"
        start_release(c, cfg, config_path, new, to, wait)
    except Exception as e:  # any failure after the backup: everything goes back
        why = e if isinstance(e, UpgradeFailed) else f"{type(e).__name__}: {e}"
        out(f"upgrade FAILED while {step}: {why}")
        failure = {"state": "failed", "from": frm, "to": to, "step": step, "error": str(why), "backup": str(bk),
                   "backupSha256": bk_sha, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return _roll_back(c, cfg, config_path, p, old, frm, prev, bk, wait, out, failure)
    up = time.monotonic()
    _record(p, {"state": "upgraded", "from": frm, "to": to, "fromDir": str(old), "toDir": str(new),
                "backup": str(bk), "backupSha256": bk_sha,
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    out(f"upgraded to {to} in {up - t0:.1f} s (controller API down {up - down:.1f} s); backup kept at {bk}; "
        "`zstack-ctl rollback` returns to " + frm)
    return 0


def restore_backup(cfg: ControllerConfig, bk: Path, bk_sha: str, keep_as: str, out: Out) -> tuple[Path | None, str]:
    """Put the backup ``bk`` back (:func:`restore_exact`) and check, before any release opens it, that the
    database file's sha256 is the one the backup had when it was taken (``bk_sha``); the TLS directory saved
    with it goes back too. Returns (the database set aside, the restored file's sha256)."""
    kept = restore_exact(cfg.db_path, bk, keep_as)
    got = release.sha256(Path(cfg.db_path))
    if got != bk_sha:
        raise UpgradeFailed(f"the restored database {cfg.db_path} has sha256 {got}, not the backup's {bk_sha}")
    out(f"database restored byte for byte from {bk}: sha256 {got}")
    archive = ctlbackup.pki_archive(bk)
    if archive.is_file():
        kept_pki = ctlbackup.restore_pki(archive, ctlbackup.pki_dir(cfg))
        out(f"TLS directory restored from {archive}" + (f" (the other one kept as {kept_pki})" if kept_pki else ""))
    return kept, got


def _record_failure(p: Path, data: dict[str, Any]) -> None:
    tmp = p / ".last-failed-upgrade.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, p / "last-failed-upgrade.json")


def last_failed_upgrade(p: Path) -> dict[str, Any] | None:
    """What the last failed upgrade recorded (``<prefix>/last-failed-upgrade.json``): its step and error, the
    backup and its sha256, and the sha256 of the database file restored from it before the old release ran."""
    try:
        return dict(json.loads((p / "last-failed-upgrade.json").read_text()))
    except (OSError, ValueError):
        return None


def _roll_back(c: Controls, cfg: ControllerConfig, config_path: str | None, p: Path, old: Path, frm: str,
               prev: Path | None, bk: Path, wait: float, out: Out, failure: dict[str, Any]) -> int:
    try:
        _stop(c, cfg)
        kept, restored = restore_backup(cfg, bk, str(failure["backupSha256"]), "failed-upgrade", out)
        _record_failure(p, {**failure, "restoredSha256": restored, "keptFailedDatabase": str(kept) if kept else None})
        _restore_links(p, old, prev)
        start_release(c, cfg, config_path, old, frm, wait)
    except Exception as e:
        _record_failure(p, {**failure, "rollbackError": f"{type(e).__name__}: {e}"})
        out(f"ROLLBACK FAILED too: {e}; the backup is {bk}, the previous release {old}: restore by hand with "
            f"`zstack-ctl restore {bk}`")
        return 2
    out(f"rolled back: release {frm} runs again on the database from before the upgrade (restored from {bk}"
        + (f"; the failed one is kept as {kept}" if kept else "") + ")")
    return 1


def rollback(c: Controls, cfg: ControllerConfig, config_path: str | None, *, p: Path | None = None,
             wait: float = 90.0, out: Out = print) -> int:
    p = p or release.prefix()
    rec = last_upgrade(p)
    cur = release.current(p)
    if rec is None or rec.get("state") != "upgraded":
        out(f"rollback: no upgrade to roll back is recorded in {p / 'upgrade.json'}")
        return 1
    if cur is None or cur != Path(rec["toDir"]).resolve():
        out(f"rollback: the release in use is {cur}, not {rec['toDir']} which the last upgrade installed; "
            "nothing changed")
        return 1
    old, bk = Path(rec["fromDir"]), Path(rec["backup"])
    try:
        release.info(old)
        if not bk.is_file():
            raise release.ReleaseError(f"the backup {bk} is missing")
    except release.ReleaseError as e:
        out(f"rollback: {e}; nothing changed")
        return 1
    out(f"rolling back {rec['to']} -> {rec['from']} with the database backed up at {rec['date']} ({bk}); "
        "changes made since then are not in it")
    try:
        _stop(c, cfg)
        kept, _ = restore_backup(cfg, bk, str(rec.get("backupSha256") or release.sha256(bk)), "before-rollback", out)
        release.switch(p, old)
        start_release(c, cfg, config_path, old, str(rec["from"]), wait)
    except Exception as e:
        out(f"rollback FAILED: {type(e).__name__}: {e}")
        return 2
    _record(p, {**rec, "state": "rolled back", "rolledBack": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "keptDatabase": str(kept) if kept else None})
    out(f"rolled back to {rec['from']}" + (f"; the database of {rec['to']} is kept as {kept}" if kept else ""))
    return 0
