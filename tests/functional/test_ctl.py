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
