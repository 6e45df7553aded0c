#!/usr/bin/env python3
"""Benchmark of the virtual router image: size, build time (cached), QEMU start -> agent ready under plain
TCG, and the time to apply full-state pushes (NICs + SNAT, then 1,000 DHCP entries + 200 EIPs + 200
port-forwarding rules, a re-apply, then one change at a time), with the agent's own split of each apply
(render, addresses, nft, dnsmasq).

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


def state(generation: int, dhcp: int = 0, eips: int = 0, pfs: int = 0) -> dict[str, object]:
    """A router's whole state: NICs, SNAT, DNS, ``dhcp`` DHCP entries, ``eips`` EIPs (a VIP each) and ``pfs``
    port-forwarding rules (4 per VIP: one port rewritten from one network only, a range kept, a range shifted
    port for port, UDP); every VIP an address of the public NIC, as the controller pushes them."""
    guest = [f"10.120.{i // 250 + 1}.{i % 250 + 2}" for i in range(max(dhcp, eips + pfs))]
    eip_vips = [f"172.20.{i // 250 + 1}.{i % 250 + 2}" for i in range(eips)]
    pf_vips = [f"172.20.{i // 250 + 100}.{i % 250 + 2}" for i in range((pfs + 3) // 4)]
    rules = []
    for k in range(pfs):
        vip, guest_ip, kind = pf_vips[k // 4], guest[eips + k], k % 4
        base = {"vipIp": vip, "guestIp": guest_ip, "publicNicMac": MACS[0], "privateNicMac": MACS[1],
                "allowedCidr": None, "protocol": "tcp"}
        rules.append({**base, **(
            {"vipPortStart": 2222, "vipPortEnd": 2222, "privatePortStart": 22, "privatePortEnd": 22,
             "allowedCidr": "203.0.113.0/24"} if kind == 0 else
            {"vipPortStart": 8000, "vipPortEnd": 8009, "privatePortStart": 8000, "privatePortEnd": 8009} if kind == 1
            else {"vipPortStart": 9000, "vipPortEnd": 9009, "privatePortStart": 7000, "privatePortEnd": 7009}
            if kind == 2 else
            {"vipPortStart": 5353, "vipPortEnd": 5353, "privatePortStart": 53, "privatePortEnd": 53,
             "protocol": "udp"})})
    return {
        "generation": generation,
        "nics": [{"mac": MACS[0], "ip": "172.20.0.2", "prefix": 16, "gateway": "172.20.0.1",
                  "defaultRoute": True, "metaData": 3},
                 {"mac": MACS[1], "ip": "10.120.0.1", "prefix": 16, "metaData": 4}],
        "snat": [{"privateNicMac": MACS[1], "publicNicMac": MACS[0], "publicIp": "172.20.0.2",
                  "guestCidr": "10.120.0.0/16"}],
        "dhcp": [{"nicMac": MACS[1], "mac": f"fa:16:3e:00:{i // 256:02x}:{i % 256:02x}", "ip": guest[i],
                  "prefix": 16, "gateway": "10.120.0.1", "dns": ["10.120.0.1"], "hostname": f"vm-{i}"}
                 for i in range(dhcp)],
        "dns": {"nicMacs": [MACS[1]], "upstreams": ["172.20.0.1"]},
        "vips": [{"ip": v, "prefix": 16, "nicMac": MACS[0]} for v in eip_vips + pf_vips],
        "eips": [{"vipIp": v, "guestIp": guest[i], "publicNicMac": MACS[0], "privateNicMac": MACS[1]}
                 for i, v in enumerate(eip_vips)],
        "pfs": rules,
    }


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
        full = (1000, 200, 200)
        pushes = (("apply NICs+SNAT+DNS", state(1)),
                  ("apply 1000 DHCP + 200 EIP + 200 PF", state(2, *full)),
                  ("re-apply the same", state(3, *full)),
                  ("one more DHCP entry", state(4, full[0] + 1, *full[1:])),
                  ("one EIP less", state(5, full[0] + 1, full[1] - 1, full[2])))
        for name, st in pushes:
            t1 = time.monotonic()
            status, reply = channel.call(str(sock), "/apply", st, token, timeout=120)
            if status != 200:
                raise SystemExit(f"{name}: HTTP {status} {reply}\n{console.read_text()[-2000:]}")
            figures[name] = time.monotonic() - t1
            parts = ", ".join(f"{k} {v:.3f}" for k, v in reply.get("seconds", {}).items())
            print(f"    {name}: {figures[name]:.2f} s round trip (agent: {parts})", flush=True)
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
