"""``zstack-ctl start|stop|status|backup|restore``: manage the controller process and its database.

Under systemd the controller runs as unit ``zstack-py-controller``; where systemd does not run (containers,
this project's CI) ``start`` runs it as a background daemon with a pid file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from controller.config import DEFAULT_CONFIG, ControllerConfig

UNIT = "zstack-py-controller"
PID_FILE = Path(os.environ.get("ZSTACK_CTL_PIDFILE", "/run/zstack-py/controller.pid"))


def has_systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def _url(cfg: ControllerConfig) -> str:
    host = "127.0.0.1" if cfg.listen_host in ("0.0.0.0", "::") else cfg.listen_host
    return f"http://{host}:{cfg.port}"


def _healthy(cfg: ControllerConfig, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(_url(cfg) + "/readyz", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"controller.server" in cmd else None


def start(cfg: ControllerConfig, config_path: str | None, wait: float) -> int:
    if _healthy(cfg):
        print(f"controller already running at {_url(cfg)}")
        return 0
    if has_systemd():
        subprocess.run(["systemctl", "start", UNIT], check=True)
    elif _pid() is None:
        Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
        PID_FILE.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "controller.server"] + (["--config", config_path] if config_path else [])
        with open(Path(cfg.log_dir) / "controller.out", "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True)
        PID_FILE.write_text(str(proc.pid))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _healthy(cfg):
            print(f"controller started at {_url(cfg)}")
            return 0
        time.sleep(0.2)
    print(f"controller did not become ready within {wait:.0f} s; see {cfg.log_dir}/controller.log",
          file=sys.stderr)
    return 1


def stop(cfg: ControllerConfig) -> int:
    if has_systemd():
        subprocess.run(["systemctl", "stop", UNIT], check=False)
        return 0
    pid = _pid()
    if pid is None:
        print("controller is not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    PID_FILE.unlink(missing_ok=True)
    print("controller stopped")
    return 0


def status(cfg: ControllerConfig, as_json: bool) -> int:
    up = _healthy(cfg)
    info = {"running": up, "url": _url(cfg), "pid": _pid(), "database": cfg.db_path,
            "logs": str(Path(cfg.log_dir) / "controller.log"),
            "manager": "systemd" if has_systemd() else "daemon"}
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(f"controller: {'running' if up else 'NOT running'} ({info['manager']})")
        for k in ("url", "pid", "database", "logs"):
            print(f"  {k}: {info[k]}")
    return 0 if up else 3


def backup_cmd(cfg: ControllerConfig, target: str | None) -> int:
    from controller.ctlbackup import BackupError, backup, inspect

    try:
        path = backup(cfg.db_path, target)
        version = inspect(path)
    except (BackupError, OSError) as e:
        print(f"backup failed: {e}", file=sys.stderr)
        return 1
    print(f"backed up {cfg.db_path} to {path} (schema version {version}, {path.stat().st_size} bytes, mode 0600)")
    return 0


def restore_cmd(cfg: ControllerConfig, source: str, stop_first: bool) -> int:
    from controller.ctlbackup import BackupError, restore

    if _healthy(cfg) or _pid() is not None:
        if not stop_first:
            print(f"the controller is running ({_url(cfg)}); stop it first (zstack-ctl stop) or pass --stop",
                  file=sys.stderr)
            return 1
        stop(cfg)
        if _healthy(cfg) or _pid() is not None:
            print("the controller did not stop; nothing restored", file=sys.stderr)
            return 1
    try:
        version, kept = restore(cfg.db_path, source)
    except (BackupError, OSError) as e:
        print(f"restore failed, the database is unchanged: {e}", file=sys.stderr)
        return 1
    print(f"restored {cfg.db_path} from {source} (schema version {version})"
          + (f"; the previous database is kept as {kept}" if kept else "")
          + "; start the controller with zstack-ctl start")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zstack-ctl", description="manage the ZStack-Py controller")
    p.add_argument("--config", default=None, help=f"controller config (default {DEFAULT_CONFIG})")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--wait", type=float, default=30.0)
    sub.add_parser("stop")
    st = sub.add_parser("status")
    st.add_argument("--json", action="store_true")
    b = sub.add_parser("backup", help="online backup of the controller database (consistent while running)")
    b.add_argument("path", nargs="?", help="file or directory (default: <db dir>/backups/controller-<time>.db)")
    r = sub.add_parser("restore", help="replace the database with a backup (the controller must be stopped)")
    r.add_argument("path")
    r.add_argument("--stop", action="store_true", help="stop a running controller first")
    args = p.parse_args(argv)
    cfg = ControllerConfig.load(args.config)
    if args.cmd == "start":
        return start(cfg, args.config, args.wait)
    if args.cmd == "stop":
        return stop(cfg)
    if args.cmd == "backup":
        return backup_cmd(cfg, args.path)
    if args.cmd == "restore":
        return restore_cmd(cfg, args.path, args.stop)
    return status(cfg, args.json)


if __name__ == "__main__":
    sys.exit(main())
