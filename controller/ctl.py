"""``zstack-ctl start|stop|status|backup|restore|check|upgrade|rollback|tls``: manage the controller process and its
database (``upgrade``/``rollback``: :mod:`controller.upgrade`).

``tls [--json] [--renew] [--print-ca]`` shows the CA and the controller's certificate (``controller.ctltls``).

``check [--repair] [--json]`` runs the ``CheckConsistency`` API of the running controller as admin (password:
``$ZSTACK_ADMIN_PASSWORD``, else the config's ``admin_password``) and prints each difference between the
database and the hosts with what to do; exit status 0 when nothing is left to do, 1 otherwise.

Under systemd the controller runs as unit ``zstack-py-controller``; where systemd does not run (containers,
this project's CI) ``start`` runs it as a background daemon with a pid file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from controller.cli.client import tls_context as client_tls
from controller.config import DEFAULT_CONFIG, ControllerConfig

UNIT = "zstack-py-controller"
PID_FILE = Path(os.environ.get("ZSTACK_CTL_PIDFILE", "/run/zstack-py/controller.pid"))


def has_systemd() -> bool:
    """Whether the controller runs as the systemd unit (``ZSTACK_CTL_MANAGER=daemon`` forces the pid-file
    daemon: a controller on a temporary prefix, as the upgrade tests run, must never touch the unit)."""
    if os.environ.get("ZSTACK_CTL_MANAGER") == "daemon":
        return False
    return Path("/run/systemd/system").is_dir()


def _url(cfg: ControllerConfig) -> str:
    host = "127.0.0.1" if cfg.listen_host in ("0.0.0.0", "::") else cfg.listen_host
    return f"{'https' if cfg.api_tls else 'http'}://{host}:{cfg.port}"


def _tls(cfg: ControllerConfig) -> ssl.SSLContext | None:
    """How ``zstack-ctl`` verifies an https API: the operator's ``api_tls_ca`` (or the system's CAs) for an
    operator-provided certificate, else the controller's own CA (``pki/ca.crt``)."""
    if not cfg.api_tls:
        return None
    if cfg.api_tls_cert:
        return client_tls(cfg.api_tls_ca)
    return client_tls(str(Path(cfg.tls_dir) if cfg.tls_dir else Path(cfg.db_path).parent / "pki") + "/ca.crt")


def _healthy(cfg: ControllerConfig, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(_url(cfg) + "/readyz", timeout=timeout, context=_tls(cfg)) as r:
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


def start(cfg: ControllerConfig, config_path: str | None, wait: float, python: str | None = None) -> int:
    """Start the controller (``python``: the interpreter of the release to run, default this one's; the
    systemd unit runs ``<prefix>/current``)."""
    if _healthy(cfg):
        print(f"controller already running at {_url(cfg)}")
        return 0
    if has_systemd():
        subprocess.run(["systemctl", "start", UNIT], check=True)
    elif _pid() is None:
        Path(cfg.log_dir).mkdir(parents=True, exist_ok=True)
        PID_FILE.parent.mkdir(parents=True, exist_ok=True)
        # -P: the installed code, never a ``controller`` package in the working directory
        argv = [python or sys.executable, "-P", "-m", "controller.server"]
        argv += ["--config", config_path] if config_path else []
        with open(Path(cfg.log_dir) / "controller.out", "ab") as out:
            env = None
            if python:  # a release's interpreter runs the release's code only
                env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
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


def versions(cfg: ControllerConfig) -> dict[str, Any]:
    """The release, the schema version this code ships, the schema version of the database file (None when it
    does not exist yet or cannot be read) and the agent protocol level."""
    from controller.db.database import migrations
    from controller.version import PROTOCOL_LEVEL, VERSION

    db_version = None
    if Path(cfg.db_path).is_file():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{cfg.db_path}?mode=ro", uri=True)) as c:
                db_version = c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        except sqlite3.Error:
            db_version = None
    return {"version": VERSION, "schemaVersion": migrations()[-1][0], "databaseSchemaVersion": db_version,
            "agentProtocol": PROTOCOL_LEVEL}


def status(cfg: ControllerConfig, as_json: bool) -> int:
    up = _healthy(cfg)
    info = {"running": up, "url": _url(cfg), "pid": _pid(), "database": cfg.db_path,
            "logs": str(Path(cfg.log_dir) / "controller.log"),
            "manager": "systemd" if has_systemd() else "daemon", **versions(cfg)}
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(f"controller: {'running' if up else 'NOT running'} ({info['manager']})")
        for k in ("url", "pid", "database", "logs", "version", "schemaVersion", "databaseSchemaVersion",
                  "agentProtocol"):
            print(f"  {k}: {info[k]}")
    return 0 if up else 3


def backup_cmd(cfg: ControllerConfig, target: str | None) -> int:
    from controller.ctlbackup import BackupError, backup, backup_pki, inspect, pki_dir

    try:
        path = backup(cfg.db_path, target)
        version = inspect(path)
        pki = backup_pki(pki_dir(cfg), path)
    except (BackupError, OSError) as e:
        print(f"backup failed: {e}", file=sys.stderr)
        return 1
    print(f"backed up {cfg.db_path} to {path} (schema version {version}, {path.stat().st_size} bytes, mode 0600)"
          + (f"; the TLS directory {pki_dir(cfg)} to {pki} (mode 0600)" if pki else
             f"; no TLS directory at {pki_dir(cfg)}"))
    return 0


def restore_cmd(cfg: ControllerConfig, source: str, stop_first: bool) -> int:
    from controller.ctlbackup import BackupError, pki_archive, pki_dir, restore, restore_pki

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
          + (f"; the previous database is kept as {kept}" if kept else ""))
    archive = pki_archive(Path(source))
    if archive.is_file():
        try:
            kept_pki = restore_pki(archive, pki_dir(cfg))
        except BackupError as e:
            print(f"restoring the TLS directory failed ({e}); {pki_dir(cfg)} is unchanged", file=sys.stderr)
            return 1
        print(f"restored the TLS directory {pki_dir(cfg)} from {archive}"
              + (f"; the previous one is kept as {kept_pki}" if kept_pki else ""))
    else:
        print(f"the backup has no TLS directory ({archive}); {pki_dir(cfg)} is left as it is")
    print("start the controller with zstack-ctl start")
    return 0


_TLS: ssl.SSLContext | None = None  # set by check(): how an https API is verified


def _opener() -> urllib.request.OpenerDirector:
    # the controller is never behind a proxy
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_TLS))


def _post(url: str, body: dict[str, Any], session: str | None = None, timeout: float = 600) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if session:
        headers["Authorization"] = f"OAuth {session}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with _opener().open(req, timeout=timeout) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as e:
        return dict(json.loads(e.read() or b"{}"))


def _get(url: str, session: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"OAuth {session}"})
    with _opener().open(req, timeout=30) as r:
        return dict(json.loads(r.read()))


def api_version(cfg: ControllerConfig) -> str | None:
    """The release the running controller reports (GetVersion), None when it does not answer."""
    try:
        reply = _post(_url(cfg) + "/v1/GetVersion", {}, timeout=10)
    except (OSError, ValueError):
        return None
    v = reply.get("version")
    return str(v) if v else None


def check(cfg: ControllerConfig, repair: bool, as_json: bool, url: str | None = None) -> int:
    global _TLS
    base = url or _url(cfg)
    _TLS = _tls(cfg)
    password = os.environ.get("ZSTACK_ADMIN_PASSWORD") or cfg.admin_password
    try:
        login = _post(base + "/v1/LogInByAccount", {"accountName": "admin", "password": password}, timeout=30)
    except OSError as e:
        print(f"controller not reachable at {base}: {e}", file=sys.stderr)
        return 2
    if not login.get("success"):
        print(f"admin login failed: {login.get('error')}; set ZSTACK_ADMIN_PASSWORD", file=sys.stderr)
        return 2
    session = login["inventory"]["uuid"]
    reply = _post(base + "/v1/CheckConsistency", {"repair": repair, "timeout": 600000}, session)
    while reply.get("jobUuid") and "findings" not in reply:
        time.sleep(1)
        job = _get(base + f"/v1/jobs/{reply['jobUuid']}", session)
        if job["state"] != "Processing":
            reply = job["result"] or {}
    if not reply.get("success", False):
        print(f"CheckConsistency failed: {reply.get('error')}", file=sys.stderr)
        return 2
    findings = reply["findings"]
    if as_json:
        print(json.dumps(findings, indent=2))
    elif not findings:
        print("consistent: the database and every connected host agree")
    for f in [] if as_json else findings:
        state = " [repaired]" if f["repaired"] else (" [--repair fixes it]" if f["repairable"] else "")
        where = f" on host {f['host']}" if f["host"] else ""
        print(f"{f['kind']}: {f['resource']}{where}: {f['detail']}{state}\n    what to do: {f['action']}")
    left = [f for f in findings if not f["repaired"]]
    return 1 if left else 0


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
    ck = sub.add_parser("check", help="compare the database with every connected host")
    ck.add_argument("--repair", action="store_true", help="fix the safe differences")
    ck.add_argument("--json", action="store_true")
    ck.add_argument("--url", default=None, help="controller URL (default: from the config)")
    u = sub.add_parser("upgrade", help="upgrade to a release (a wheel, or an installed release directory): "
                                       "pre-flight, backup, migrate, start; rolled back on any failure")
    u.add_argument("source")
    u.add_argument("--index-url", default=None, help="PyPI mirror for the new release's dependencies")
    u.add_argument("--wait", type=float, default=90.0)
    rb = sub.add_parser("rollback", help="return to the release before the last upgrade, with its database backup")
    rb.add_argument("--wait", type=float, default=90.0)
    t = sub.add_parser("tls", help="the CA and certificates; what traffic is TLS")
    t.add_argument("--json", action="store_true")
    t.add_argument("--renew", action="store_true", help="issue the controller's certificate again now")
    t.add_argument("--print-ca", action="store_true", help="print the CA certificate (PEM) for zstack-cli --ca")
    args = p.parse_args(argv)
    cfg = ControllerConfig.load(args.config)
    if args.cmd == "tls":
        from controller.ctltls import tls_cmd

        return tls_cmd(cfg, as_json=args.json, renew=args.renew, print_ca=args.print_ca)
    if args.cmd in ("upgrade", "rollback"):
        from controller import upgrade

        def out(line: str) -> None:
            print(line, flush=True)

        controls = upgrade.Controls(start=start, stop=stop, healthy=_healthy, pid=_pid, version=api_version)
        if args.cmd == "rollback":
            return upgrade.rollback(controls, cfg, args.config, wait=args.wait, out=out)
        return upgrade.upgrade(controls, cfg, args.config, args.source, wait=args.wait, out=out,
                               pip_args=["--index-url", args.index_url] if args.index_url else None)
    if args.cmd == "start":
        return start(cfg, args.config, args.wait)
    if args.cmd == "stop":
        return stop(cfg)
    if args.cmd == "backup":
        return backup_cmd(cfg, args.path)
    if args.cmd == "restore":
        return restore_cmd(cfg, args.path, args.stop)
    if args.cmd == "check":
        return check(cfg, args.repair, args.json, args.url)
    return status(cfg, args.json)


if __name__ == "__main__":
    sys.exit(main())
