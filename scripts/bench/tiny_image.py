#!/usr/bin/env python3
"""Benchmark of the tiny guest image: sizes, build times, and boot milestones under plain TCG.

Run as root: ``/opt/zstack-py/venv/bin/python scripts/bench/tiny_image.py [--boots N]``.
Builds into a fresh temporary directory (clean build, downloads included) and again (cached), then
boots ``tiny.qcow2`` N times with ``qemu-system-x86_64 -accel tcg -m 128`` in an empty network
namespace (slirp, hostfwd for SSH, a metadata HTTP server reached as the DHCP server, CloudStack style)
and prints seconds from qemu start to: the DHCP lease, user data applied, the first SSH login; and
from the power button to qemu's exit. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "functional"))
import tinyguest as tg  # noqa: E402

USER_DATA = """#cloud-config
hostname: bench-vm
runcmd:
  - echo bench-runcmd
"""


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (f"machine: {os.cpu_count()} cores, {model}, kernel {platform.release()}, load {load}; "
            f"{qemu.splitlines()[0] if qemu else 'qemu ?'}")


def timed_build(out: Path, force: bool) -> float:
    t0 = time.monotonic()
    tg.build_image(out, force=force)
    return time.monotonic() - t0


def boot_once(image: Path, key: Path, work: Path, n: int) -> dict[str, float]:
    """One boot; seconds since qemu start for each milestone."""
    pub = key.with_suffix(".pub").read_text().strip()
    md = tg.metadata_map(work / f"md{n}.json", instance_id=f"i-bench-{n}", hostname="bench-vm",
                         keys=[pub], user_data=USER_DATA)
    with tg.Netns("tinyb") as ns:
        server = subprocess.Popen(ns.argv(sys.executable, tg.__file__, "metadata", str(md), "--listen",
                                          "127.0.0.1:80"))
        vm = tg.Qemu(work, f"boot{n}", ["-drive", f"file={image},if=virtio,snapshot=on",
                                        *tg.slirp_nic(0, ssh_port=2222)], ns)
        try:
            t: dict[str, float] = {}
            vm.serial.wait_for(r"tiny: LEASE eth0", 60, vm)
            t["lease"] = time.monotonic() - vm.started
            vm.serial.wait_for(r"tiny-cloudinit: user-data applied", 30, vm)
            t["user-data applied"] = time.monotonic() - vm.started
            tg.wait_ssh(2222, key, "true", timeout=60, netns=ns)
            t["ssh login"] = time.monotonic() - vm.started
            t0 = time.monotonic()
            vm.qmp("system_powerdown")
            vm.wait_exit(30)
            t["powerdown -> exit"] = time.monotonic() - t0
            return t
        finally:
            vm.close()
            server.kill()
            server.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description="tiny image benchmark")
    ap.add_argument("--boots", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("tiny_image.py: needs root (network namespaces)")
    print(machine())
    with tempfile.TemporaryDirectory(prefix="tiny-bench-") as tmp:
        work = Path(tmp)
        clean = timed_build(work / "img", force=True)
        cached = timed_build(work / "img", force=False)
        qcow2, iso = work / "img/tiny.qcow2", work / "img/tiny.iso"
        print(f"tiny.qcow2: {qcow2.stat().st_size} B ({qcow2.stat().st_size / 2**20:.2f} MiB)")
        print(f"tiny.iso:   {iso.stat().st_size} B ({iso.stat().st_size / 2**20:.2f} MiB)")
        print(f"build: clean {clean:.1f} s (downloads included), cached {cached:.1f} s")
        key = work / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        runs = [boot_once(qcow2, key, work, n) for n in range(args.boots)]
        print(f"boot under TCG (-m 128, 1 vCPU), {args.boots} runs, seconds since qemu start "
              "(median [min-max]):")
        for k in runs[0]:
            vals = [r[k] for r in runs]
            print(f"  {k:20s} {statistics.median(vals):5.2f} [{min(vals):.2f}-{max(vals):.2f}]")
        shutil.rmtree(work / "img", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
