#!/usr/bin/env python3
"""Benchmark of the virtual router image: size, build time (cached), QEMU start -> agent ready under plain
TCG, and the time to apply full-state pushes (NICs + SNAT, then 1,000 DHCP entries + 200 EIPs).

Run as root: ``/opt/zstack-py/venv/bin/python scripts/bench/vr_bench.py [--boots N] [--out DIR]``.
Boots ``vrouter.qcow2`` (a throw-away overlay) with ``qemu-system-x86_64 -accel tcg -m 256``, two virtio NICs
on unconnected user-mode backends, and the agent's virtio-serial channel on a unix socket; talks to the
agent exactly like the host agent's relay does (vrouter.contract). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import vrouter.contract as channel  # noqa: E402
from vrouter.contract import CHANNEL_NAME  # noqa: E402

MACS = ("52:54:00:12:00:01", "52:54:00:12:00:02")


def state(generation: int, dhcp: int = 0, eips: int = 0) -> dict[str, object]:
    s: dict[str, object] = {
        "generation": generation,
        "nics": [{"mac": MACS[0], "ip": "192.168.50.2", "prefix": 24, "gateway": "192.168.50.1",
                  "defaultRoute": True, "metaData": 3},
                 {"mac": MACS[1], "ip": "10.120.0.1", "prefix": 16, "metaData": 4}],
        "snat": [{"privateNicMac": MACS[1], "publicNicMac": MACS[0], "publicIp": "192.168.50.2",
                  "guestCidr": "10.120.0.0/16"}],
        "dhcp": [{"nicMac": MACS[1], "mac": f"fa:16:3e:00:{i // 256:02x}:{i % 256:02x}",
                  "ip": f"10.120.{i // 250 + 1}.{i % 250 + 2}", "prefix": 16, "gateway": "10.120.0.1",
                  "dns": ["10.120.0.1"], "hostname": f"vm-{i}"} for i in range(dhcp)],
        "dns": {"nicMacs": [MACS[1]], "upstreams": ["192.168.50.1"]},
        "eips": [{"vipIp": f"192.168.50.{100 + i % 150}", "guestIp": f"10.120.1.{i % 250 + 2}",
                  "publicNicMac": MACS[0], "privateNicMac": MACS[1]} for i in range(eips)],
    }
    return s


def boot_once(image: Path, work: Path, n: int) -> dict[str, float]:
    overlay, sock, console = work / f"vr{n}.qcow2", work / f"vr{n}.sock", work / f"console{n}.log"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(overlay)],
                   check=True)
    argv = ["qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256", "-display", "none",
            "-serial", f"file:{console}", "-drive", f"file={overlay},if=virtio",
            "-device", "virtio-serial", "-chardev", f"socket,id=vr,path={sock},server=on,wait=off",
            "-device", f"virtserialport,chardev=vr,name={CHANNEL_NAME}"]
    for i, mac in enumerate(MACS):
        argv += ["-netdev", f"user,id=n{i},restrict=on", "-device", f"virtio-net-pci,netdev=n{i},mac={mac}"]
    t0 = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        while not sock.exists():
            time.sleep(0.05)
        token = secrets.token_hex(24)
        try:
            ready = channel.wait_ready(str(sock), f"bench-{n}", token, timeout=180)
        except channel.ChannelError as e:
            raise SystemExit(f"{e}\nconsole:\n{console.read_text()[-3000:]}") from e
        t_ready = time.monotonic() - t0
        figures = {"agent ready": t_ready}
        for name, st in (("apply NICs+SNAT+DNS", state(1)), ("apply 1000 DHCP + 200 EIP", state(2, 1000, 200)),
                         ("re-apply the same", state(3, 1000, 200))):
            t1 = time.monotonic()
            status, reply = channel.call(str(sock), "/apply", st, token, timeout=120)
            if status != 200:
                raise SystemExit(f"{name}: HTTP {status} {reply}\n{console.read_text()[-2000:]}")
            figures[name] = time.monotonic() - t1
        print(f"  boot {n}: version {ready['version']}, " +
              ", ".join(f"{k} {v:.2f} s" for k, v in figures.items()), flush=True)
        return figures
    finally:
        qemu.kill()
        qemu.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boots", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "vrouter")
    args = ap.parse_args()
    t0 = time.monotonic()
    image = Path(subprocess.run([str(REPO / "scripts/build-vr-image"), "--out", str(args.out)], check=True,
                                capture_output=True, text=True).stdout.split()[0])
    print(f"build (cached if inputs unchanged): {time.monotonic() - t0:.1f} s")
    size = image.stat().st_size
    print(f"vrouter.qcow2: {size} B = {size / (1 << 20):.1f} MiB")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load {load}; QEMU TCG, 256 MiB")
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.boots):
            boot_once(image, Path(tmp), n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
