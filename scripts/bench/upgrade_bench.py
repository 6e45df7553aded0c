#!/usr/bin/env python3
"""Upgrade time and controller API downtime with a 10,000-VM database (issue 13's target: backup + migrate +
restart <= 30 s).

Builds two wheels from copies of this checkout (A: version 0.90.0; B: 0.90.1 with one extra no-op migration),
installs A as a release under a temporary prefix (never /opt/zstack-py), starts it as a daemon on a loopback port,
fills its database with VMs and NICs, then runs ``zstack-ctl upgrade <wheel B>`` while a client probes ``/readyz``
every 50 ms. Prints: the release install beside the running one (the controller still answers), the upgrade as
zstack-ctl reports it, and the API downtime the client saw. Run as root:

    /opt/zstack-py/venv/bin/python scripts/bench/upgrade_bench.py [--vms 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from controller import release  # noqa: E402


def variant(dst: Path, version: str, migration: tuple[str, str] | None) -> Path:
    shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".git", "tests", "docs", "build", "*.egg-info",
                                                             "__pycache__", ".mypy_cache", ".ruff_cache"))
    for rel, key in (("pyproject.toml", "version"), ("kvmagent/contract/version.py", "RELEASE")):
        f = dst / rel
        f.write_text(re.sub(rf'^{key} = "[^"]+"', f'{key} = "{version}"', f.read_text(), count=1, flags=re.M))
    if migration:
        (dst / "controller" / "db" / "migrations" / migration[0]).write_text(migration[1])
    return dst


def fill(db: Path, vms: int) -> None:
    now = "2026-01-01T00:00:00.000Z"
    with sqlite3.connect(db) as con:
        rows = [(f"{i:032x}", f"vm-{i}", ("Running", "Stopped")[i % 2], 1 << 30, 1, 1000, i + 1, now, now)
                for i in range(vms)]
        con.executemany("INSERT INTO VmInstance (uuid, name, state, memorySize, cpuNum, cpuSpeed, internalId, "
                        "createDate, lastOpDate) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        nics = [(f"{i:031x}n", f"{i:032x}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                 f"fa:00:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
                 f"vnic{i + 1}.0", 0, now, now) for i in range(vms)]
        con.executemany("INSERT INTO VmNic (uuid, vmInstanceUuid, ip, mac, internalName, deviceId, createDate, "
                        "lastOpDate) VALUES (?,?,?,?,?,?,?,?)", nics)


class Probe(threading.Thread):
    """GET /readyz every 50 ms; the longest stretch without a 200 is the downtime a client sees."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.down, self.longest = url, threading.Event(), None, 0.0
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                with self.opener.open(self.url, timeout=1) as r:
                    ok = r.status == 200
            except OSError:
                ok = False
            if not ok and self.down is None:
                self.down = t
            elif ok and self.down is not None:
                self.longest = max(self.longest, t - self.down)
                self.down = None
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=10_000)
    args = ap.parse_args()
    print(describe())
    tmp = Path(tempfile.mkdtemp(prefix="zs-upgrade-bench-"))
    try:
        wheels = {}
        t0 = time.monotonic()
        for version, mig in (("0.90.0", None), ("0.90.1", ("0900_bench_noop.sql", "SELECT 1;\n"))):
            src = variant(tmp / f"src-{version}", version, mig)
            wheels[version] = release.build_wheel(src, tmp / "dist")
            shutil.rmtree(src)
        print(f"wheels built in {time.monotonic() - t0:.1f} s")
        prefix = tmp / "opt"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        db = tmp / "data" / "controller.db"
        cfg = tmp / "controller.json"
        cfg.write_text(json.dumps({"listen_host": "127.0.0.1", "port": port, "db_path": str(db),
                                   "log_dir": str(tmp / "log"), "agent_package_dir": str(tmp / "packages")}))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update({"ZSTACK_PREFIX": str(prefix), "ZSTACK_CTL_MANAGER": "daemon",
                    "ZSTACK_CTL_PIDFILE": str(tmp / "controller.pid")})

        def ctl(*a: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(prefix / "current" / "venv" / "bin" / "zstack-ctl"), "--config", str(cfg),
                                   *a], capture_output=True, text=True, env=env, timeout=900, check=False)

        release.switch(prefix, release.install(wheels["0.90.0"], prefix, log=lambda m: None))
        for step in (("start",), ("stop",)):  # creates and migrates the database
            assert ctl(*step).returncode == 0, step
        fill(db, args.vms)
        assert ctl("start").returncode == 0
        t0 = time.monotonic()
        b = release.install(wheels["0.90.1"], prefix, log=lambda m: None)
        print(f"database {db.stat().st_size / 1e6:.1f} MB with {args.vms} VMs and NICs; release 0.90.1 installed "
              f"beside the running one in {time.monotonic() - t0:.1f} s (the controller kept answering)")
        probe = Probe(f"http://127.0.0.1:{port}/readyz")
        probe.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        up = ctl("upgrade", str(b))
        total = time.monotonic() - t0
        time.sleep(0.3)
        probe.stop.set()
        probe.join()
        ctl("stop")
        assert up.returncode == 0, up.stdout + up.stderr
        reported = re.search(r"controller API down ([\d.]+) s", up.stdout)
        print(f"zstack-ctl upgrade (pre-flight, backup, stop, migrate, start, verify): {total:.1f} s; "
              f"API down {reported.group(1) if reported else '?'} s as it measured it; "
              f"longest /readyz gap seen by a client: {probe.longest:.1f} s (target: backup + migrate + restart "
              "<= 30 s); VM downtime: none (the controller does not touch domains)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
