#!/usr/bin/env python3
"""Simulated KVM hosts: plain daemons vs a real systemd per host (``scripts/testbed --mode plain|nspawn``).

Prints, for each mode: ``up`` wall time for N hosts, per-host boot time (nspawn: to ``is-system-running``
= running with sshd and libvirtd's socket active), memory per idle host (PSS of its processes), ``reboot``
time of one host (nspawn) and ``down`` time. Needs root and the machine-wide lock (run it through run-heavy).
The nspawn root tree is built first if it is not cached (its build time is printed and not counted).

    /opt/zstack-py/venv/bin/python scripts/bench/testbed_hosts.py [--hosts 2]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed.d"))
from machine import describe

TESTBED = Path(__file__).resolve().parents[1] / "testbed"
STATE = "/var/lib/zstack-py-testbed-bench"


def tb(*args: str) -> tuple[float, str]:
    t0 = time.monotonic()
    cp = subprocess.run([str(TESTBED), "--state-dir", STATE, *args], capture_output=True, text=True, timeout=600)
    if cp.returncode != 0:
        raise SystemExit(f"testbed {' '.join(args)} failed: {cp.stdout}{cp.stderr}")
    return time.monotonic() - t0, cp.stdout


def plain_pss_kib(doc: dict) -> list[int]:
    """PSS of each plain host's processes (libvirtd, sshd: the pids in the status)."""
    from tb_nspawn import pss_kib

    return [pss_kib({p for p in (h["libvirtd_pid"], h["sshd_pid"]) if p}) for h in doc["hosts"]]


def run_mode(mode: str, hosts: int) -> None:
    tb("down")
    t_up, out = tb("up", str(hosts), "--prefix", "bn", "--mgmt-net", "10.95.0", "--mode", mode)
    boots = [float(x) for x in re.findall(r"booted systemd in ([\d.]+) s", out)]
    time.sleep(2)  # let the hosts settle (journald flush, socket-activated daemons idle)
    doc = json.loads(tb("status", "--json")[1])
    if mode == "nspawn":
        pss = [h["memory_pss_kib"] for h in doc["hosts"]]
        states = [h["systemd_state"] for h in doc["hosts"]]
    else:
        pss, states = plain_pss_kib(doc), ["-"] * hosts
    line = f"{mode:6s}: up {hosts} hosts {t_up:.2f} s"
    if boots:
        line += f"; boot per host {', '.join(f'{b:.2f}' for b in boots)} s"
    line += f"; idle memory per host (PSS) {', '.join(f'{p / 1024:.1f}' for p in pss)} MiB; systemd {states}"
    if mode == "nspawn":
        t_rb, _ = tb("reboot", "h1")
        line += f"; reboot h1 {t_rb:.2f} s"
    t_down, _ = tb("down")
    print(f"{line}; down {t_down:.2f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=2)
    args = p.parse_args()
    print(describe())
    import tb_rootfs

    t0 = time.monotonic()
    tree = tb_rootfs.ensure_rootfs()
    print(f"root tree {tree.name}: ready in {time.monotonic() - t0:.1f} s (cached after the first build)")
    for mode in ("plain", "nspawn"):
        run_mode(mode, args.hosts)


if __name__ == "__main__":
    main()
