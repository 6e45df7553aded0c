"""``zstack-ctl start|status|stop`` runs the controller as a daemon where systemd does not run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _ctl(cfg: Path, pidfile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZSTACK_CTL_PIDFILE": str(pidfile)}
    return subprocess.run([sys.executable, "-m", "controller.ctl", "--config", str(cfg), *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="this machine runs systemd: ctl uses the unit")
def test_start_status_stop(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "controller.json"
    cfg.write_text(json.dumps({"listen_host": "127.0.0.1", "port": port, "db_path": str(tmp_path / "db" / "c.db"),
                               "log_dir": str(tmp_path / "log")}))
    pidfile = tmp_path / "run" / "controller.pid"
    assert _ctl(cfg, pidfile, "status").returncode == 3
    r = _ctl(cfg, pidfile, "start")
    try:
        assert r.returncode == 0, r.stderr
        st = _ctl(cfg, pidfile, "status", "--json")
        info = json.loads(st.stdout)
        assert st.returncode == 0 and info["running"] is True and info["manager"] == "daemon"
        assert info["database"] == str(tmp_path / "db" / "c.db") and info["url"] == f"http://127.0.0.1:{port}"
        assert info["logs"] == str(tmp_path / "log" / "controller.log")
        assert (tmp_path / "db" / "c.db").exists() and info["pid"] == int(pidfile.read_text())
        assert "already running" in _ctl(cfg, pidfile, "start").stdout
    finally:
        stop = _ctl(cfg, pidfile, "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert _ctl(cfg, pidfile, "status").returncode == 3
    assert not pidfile.exists()


def _post(url: str, api: str, session: str | None = None, **body: object) -> dict[str, object]:
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if session:
        headers["Authorization"] = f"OAuth {session}"
    req = urllib.request.Request(f"{url}/v1/{api}", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        result: dict[str, object] = json.loads(r.read())
        return result


def _zones(db: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM Zone").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.skipif(Path("/run/systemd/system").is_dir(), reason="this machine runs systemd: ctl uses the unit")
def test_backup_while_running_and_restore(tmp_path: Path) -> None:
    import shutil
    import sqlite3
    import stat
    import tarfile
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "db" / "c.db"
    cfg = tmp_path / "controller.json"
    cfg.write_text(json.dumps({"listen_host": "127.0.0.1", "port": port, "db_path": str(db),
                               "log_dir": str(tmp_path / "log")}))
    pidfile = tmp_path / "run" / "controller.pid"
    url = f"http://127.0.0.1:{port}"
    assert _ctl(cfg, pidfile, "start").returncode == 0
    try:
        session = str(_post(url, "LogInByAccount", accountName="admin", password="password")["inventory"]["uuid"])  # type: ignore[index]
        stop_writes = threading.Event()
        created = []

        def writer() -> None:
            while not stop_writes.is_set():
                _post(url, "CreateZone", session, name=f"z{len(created)}")
                created.append(1)

        t = threading.Thread(target=writer)
        t.start()
        try:
            while len(created) < 20:
                threading.Event().wait(0.05)
            before = len(created)
            r = _ctl(cfg, pidfile, "backup", str(tmp_path / "b1.db"))
            after = len(created)
        finally:
            stop_writes.set()
            t.join()
        assert r.returncode == 0, r.stderr
        backup = tmp_path / "b1.db"
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600
        conn = sqlite3.connect(backup)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        conn.close()
        in_backup = _zones(backup)
        assert before <= in_backup <= after + 1, (before, in_backup, after)
        # The TLS directory (the CA and the controller's certificate) goes with it, 0600.
        pki = db.parent / "pki"
        archive = tmp_path / "b1.db.pki.tar"
        assert f"the TLS directory {pki} to {archive} (mode 0600)" in r.stdout, r.stdout
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
        with tarfile.open(archive) as tar:
            assert {"pki", "pki/ca.crt", "pki/ca.key"} <= set(tar.getnames()), tar.getnames()
        ca = {n: (pki / n).read_bytes() for n in ("ca.crt", "ca.key")}
        # A backup never overwrites; the default path is under the database's directory.
        assert _ctl(cfg, pidfile, "backup", str(backup)).returncode == 1
        r = _ctl(cfg, pidfile, "backup")
        assert r.returncode == 0 and str(db.parent / "backups") in r.stdout
        # Restore refuses while the controller runs.
        r = _ctl(cfg, pidfile, "restore", str(backup))
        assert r.returncode == 1 and "running" in r.stderr
        total = len(created)
    finally:
        assert _ctl(cfg, pidfile, "stop").returncode == 0
    assert _zones(db) == total
    # A damaged file and a file from a newer schema are refused; the database is unchanged.
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    r = _ctl(cfg, pidfile, "restore", str(bad))
    assert r.returncode == 1 and "unchanged" in r.stderr
    future = tmp_path / "future.db"
    future.write_bytes(backup.read_bytes())
    conn = sqlite3.connect(future)
    conn.execute("INSERT INTO schema_version (version, name) VALUES (9999, '9999_future.sql')")
    conn.commit()
    conn.close()
    r = _ctl(cfg, pidfile, "restore", str(future))
    assert r.returncode == 1 and "newer" in r.stderr
    assert _zones(db) == total
    # The good backup is restored, its TLS directory too (here: lost since, and a stray world-readable file
    # left in its place); the old database is kept, 0600.
    shutil.rmtree(pki)
    pki.mkdir(mode=0o755)
    (pki / "stray").write_text("not from the backup")
    r = _ctl(cfg, pidfile, "restore", str(backup))
    assert r.returncode == 0, r.stderr
    assert f"restored the TLS directory {pki} from {archive}" in r.stdout, r.stdout
    assert {n: (pki / n).read_bytes() for n in ("ca.crt", "ca.key")} == ca
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700 and not (pki / "stray").exists()
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in pki.rglob("*") if f.is_file())
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in pki.rglob("*") if d.is_dir())
    (kept_pki,) = db.parent.glob("pki.before-restore-*")
    assert (kept_pki / "stray").exists() and stat.S_IMODE(kept_pki.stat().st_mode) == 0o700
    kept = list(db.parent.glob("c.db.before-restore-*"))
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert _ctl(cfg, pidfile, "start").returncode == 0
    try:
        session = str(_post(url, "LogInByAccount", accountName="admin", password="password")["inventory"]["uuid"])  # type: ignore[index]
        reply = _post(url, "QueryZone", session, conditions=[], count=True)
        assert reply["total"] == in_backup
    finally:
        assert _ctl(cfg, pidfile, "stop").returncode == 0
