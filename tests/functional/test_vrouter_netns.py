"""The router agent's data plane in namespaces (issue 12's functional tier, no QEMU): the agent's own apply
(vrouter.agent.Router.apply, the code the router VM runs on every push) inside a namespace ``vr`` between a
guest bridge and a "public" bridge, all in namespaces this test creates:

    guest1, guest2 --- brguest ---(eth1) vr (eth0)--- brpub --- inet (192.168.77.1 = the public gateway,
                                                                      192.168.77.9 = a second source)

The bridges live in a namespace ``sw``. The agent runs in ``vr`` under ``ip netns exec`` (its own mount
namespace, where /run and /var/log are private tmpfs/bind mounts: nothing is written on the host).
Checked: DHCP lease, router and DNS from the router's dnsmasq; SNAT'd connections seen by a TCP echo server
in ``inet``; EIP both ways; port forwarding with ranges (same ports, shifted ports, UDP) and allowedCidr (an
allowed source connects, another does not); a re-apply leaves the rule set identical (and dnsmasq running);
``nft flush ruleset`` is undone by the next push."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TAG = secrets.token_hex(2)
NS = {k: f"zvrf{TAG}-{k}" for k in ("sw", "vr", "guest1", "guest2", "inet")}
PUB_MAC, GUEST_MAC = "52:54:00:aa:00:01", "52:54:00:aa:00:02"
G1_MAC, G2_MAC = "fa:16:3e:aa:00:01", "fa:16:3e:aa:00:02"
PUBLIC_IP, GW, OTHER = "192.168.77.2", "192.168.77.1", "192.168.77.9"
G1, G2, EIP_VIP, PF_VIP = "10.100.0.12", "10.100.0.13", "192.168.77.50", "192.168.77.60"

ECHO = r"""
import socket, sys, threading
host = sys.argv[1]
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((host, port)); s.listen(16)
    while True:
        c, peer = s.accept()
        with c:
            c.sendall(f"{port} {peer[0]}\n".encode())
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, port))
    while True:
        data, peer = s.recvfrom(100)
        s.sendto(f"{port} {peer[0]}\n".encode(), peer)
for spec in sys.argv[2:]:
    proto, port = spec.split(":")
    threading.Thread(target=tcp if proto == "tcp" else udp, args=(int(port),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

CLIENT = r"""
import socket, sys
proto, dst, port, src = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[5]))
if src != "-":
    s.bind((src, 0))
try:
    if proto == "tcp":
        s.connect((dst, port)); print(s.recv(100).decode().strip())
    else:
        s.sendto(b"x", (dst, port)); print(s.recvfrom(100)[0].decode().strip())
except OSError as e:
    print(f"FAIL {type(e).__name__}")
"""

# the router agent in the vr namespace: one JSON state per line in, the apply's result (or error) per line out
DRIVER = r"""
import json, sys
from vrouter import agent
agent.prepare()
for line in sys.stdin:
    try:
        out = agent.ROUTER.apply(json.loads(line))
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    print(json.dumps(out), flush=True)
"""

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
{ echo "ip=$ip"; echo "subnet=$subnet"; echo "router=$router"; echo "dns=$dns"; echo "hostname=$hostname"; } \
    > "$LEASE_OUT"
"""


def sh(*argv: str, check: bool = True, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise AssertionError(f"{argv} failed rc={cp.returncode}: {cp.stdout}{cp.stderr}")
    return cp


def ns(name: str, *argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", NS[name], *argv, **kw)


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []
        self.generation = 0
        self.ports = 0

    def setup(self) -> None:
        tmp = self.tmp
        for n in NS.values():
            sh("ip", "netns", "add", n)
        for n in NS:
            ns(n, "ip", "link", "set", "lo", "up")
        for br in ("brpub", "brguest"):
            ns("sw", "ip", "link", "add", br, "type", "bridge")
            ns("sw", "ip", "link", "set", br, "up")
        self._wire("vr", "eth0", PUB_MAC, "brpub")
        self._wire("vr", "eth1", GUEST_MAC, "brguest")
        self._wire("guest1", "eth0", G1_MAC, "brguest")
        self._wire("guest2", "eth0", G2_MAC, "brguest")
        self._wire("inet", "eth0", "52:54:00:aa:00:09", "brpub")
        for ip in (GW, OTHER):
            ns("inet", "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        (tmp / "log").mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.driver = self._spawn(["ip", "netns", "exec", NS["vr"], "sh", "-c",
                                   'mount -t tmpfs tmpfs /run && '
                                   f'mount --bind {tmp}/log /var/log && exec "$0" -u -c "$1"',
                                   sys.executable, DRIVER], env=env)

    def _wire(self, name: str, ifname: str, mac: str, bridge: str) -> None:
        self.ports += 1
        port = f"p{self.ports}{secrets.token_hex(3)}"
        ns("sw", "ip", "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", NS[name])
        ns("sw", "ip", "link", "set", port, "master", bridge, "up")
        ns(name, "ip", "link", "set", ifname, "address", mac, "up")

    def _spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, **kw)
        self.procs.append(p)
        return p

    def echo(self, name: str, host: str, *specs: str) -> None:
        p = self._spawn(["ip", "netns", "exec", NS[name], sys.executable, "-u", "-c", ECHO, host, *specs])
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", p.stderr

    def push(self, state: dict[str, Any]) -> dict[str, Any]:
        """The controller's whole-state push, with the next generation number."""
        self.generation += 1
        assert self.driver.stdin is not None and self.driver.stdout is not None
        self.driver.stdin.write(json.dumps({**state, "generation": self.generation}) + "\n")
        self.driver.stdin.flush()
        line = self.driver.stdout.readline()
        assert line, f"the router agent died: {self.driver.stderr.read() if self.driver.stderr else ''}"
        reply = dict(json.loads(line))
        assert reply.get("generation") == self.generation, reply
        return reply

    def connect(self, name: str, proto: str, dst: str, port: int, *, src: str = "-", timeout: float = 10) -> str:
        return ns(name, sys.executable, "-c", CLIENT, proto, dst, str(port), src, str(timeout),
                  timeout=timeout + 30).stdout.strip()

    def ruleset(self) -> str:
        return ns("vr", "nft", "list", "ruleset").stdout

    def lease(self, name: str) -> dict[str, str]:
        script, out = self.tmp / "udhcpc.sh", self.tmp / f"lease-{name}"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        out.unlink(missing_ok=True)
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline:
            ns(name, "env", f"LEASE_OUT={out}", "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5",
               "-T", "2", "-s", str(script), check=False, timeout=60)
        assert out.exists(), f"{name}: no DHCP lease from the router"
        return dict(line.split("=", 1) for line in out.read_text().splitlines())

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in NS.values():   # what the agent started in its namespace (dnsmasq)
            for pid in sh("ip", "netns", "pids", n, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", n, check=False)


def state(*, eip: bool = True, pfs: bool = True) -> dict[str, Any]:
    nics = [{"mac": PUB_MAC, "ip": PUBLIC_IP, "prefix": 24, "gateway": GW, "defaultRoute": True, "metaData": 3},
            {"mac": GUEST_MAC, "ip": "10.100.0.1", "prefix": 24, "gateway": "10.100.0.1", "metaData": 4}]
    s: dict[str, Any] = {
        "nics": nics,
        "snat": [{"privateNicMac": GUEST_MAC, "publicNicMac": PUB_MAC, "publicIp": PUBLIC_IP,
                  "guestCidr": "10.100.0.0/24"}],
        "dhcp": [{"nicMac": GUEST_MAC, "mac": mac, "ip": ip, "prefix": 24, "gateway": "10.100.0.1",
                  "dns": ["10.100.0.1"], "hostname": host}
                 for mac, ip, host in ((G1_MAC, G1, "guest-one"), (G2_MAC, G2, "guest-two"))],
        "dns": {"nicMacs": [GUEST_MAC], "upstreams": [GW]},
        "vips": [],
    }
    if eip:
        s["vips"].append({"ip": EIP_VIP, "prefix": 24, "nicMac": PUB_MAC})
        s["eips"] = [{"vipIp": EIP_VIP, "guestIp": G2, "publicNicMac": PUB_MAC, "privateNicMac": GUEST_MAC}]
    if pfs:
        s["vips"].append({"ip": PF_VIP, "prefix": 24, "nicMac": PUB_MAC})
        pf = {"vipIp": PF_VIP, "guestIp": G1, "publicNicMac": PUB_MAC, "privateNicMac": GUEST_MAC}
        s["pfs"] = [
            # shifted range, only from 192.168.77.0/30 (the gateway .1, not .9)
            {**pf, "protocol": "tcp", "vipPortStart": 6000, "vipPortEnd": 6002, "privatePortStart": 7000,
             "privatePortEnd": 7002, "allowedCidr": "192.168.77.0/30"},
            # same ports, from anywhere
            {**pf, "protocol": "tcp", "vipPortStart": 7100, "vipPortEnd": 7101, "privatePortStart": 7100,
             "privatePortEnd": 7101, "allowedCidr": None},
            {**pf, "protocol": "udp", "vipPortStart": 5300, "vipPortEnd": 5300, "privatePortStart": 7053,
             "privatePortEnd": 7053, "allowedCidr": None}]
    return s


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for tool in ("busybox", "dnsmasq", "nft"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is required for the router's namespace tier (scripts/install.sh installs it)")
    lab = Lab(tmp_path_factory.mktemp("vrnetns"))
    try:
        lab.setup()
        lab.push(state())
        for name, ip in (("guest1", G1), ("guest2", G2)):
            lease = lab.lease(name)
            ns(name, "ip", "addr", "add", f"{lease['ip']}/24", "dev", "eth0")
            ns(name, "ip", "route", "add", "default", "via", lease["router"])
            assert lease["ip"] == ip
        lab.echo("inet", "0.0.0.0", "tcp:8000")
        lab.echo("guest1", G1, "tcp:7000", "tcp:7001", "tcp:7002", "tcp:7100", "tcp:7101", "udp:7053")
        lab.echo("guest2", G2, "tcp:8022")
        yield lab
    finally:
        lab.close()


def test_dhcp_lease_router_and_dns_come_from_the_router(lab: Lab) -> None:
    lease = lab.lease("guest1")
    assert (lease["ip"], lease["subnet"], lease["router"], lease["dns"].split(), lease["hostname"]) == (
        G1, "255.255.255.0", "10.100.0.1", ["10.100.0.1"], "guest-one")
    # the router's dnsmasq answers for the guests' names
    out = ns("guest1", "busybox", "nslookup", "guest-two", "10.100.0.1", check=False).stdout
    assert G2 in out, out


def test_snat_then_eip_both_ways(lab: Lab) -> None:
    lab.push(state())
    # SNAT: the internet sees the router's public address for guest1
    assert lab.connect("guest1", "tcp", GW, 8000) == f"8000 {PUBLIC_IP}"
    # EIP: guest2 leaves from its VIP, and the internet reaches guest2 at the VIP (sources kept)
    assert lab.connect("guest2", "tcp", GW, 8000) == f"8000 {EIP_VIP}"
    assert lab.connect("inet", "tcp", EIP_VIP, 8022, src=GW) == f"8022 {GW}"
    # without the EIP: the VIP answers no more, guest2 is SNAT'd by the router's address again
    lab.push(state(eip=False))
    assert lab.connect("inet", "tcp", EIP_VIP, 8022, src=GW, timeout=3).startswith("FAIL")
    assert lab.connect("guest2", "tcp", GW, 8000) == f"8000 {PUBLIC_IP}"


def test_port_forwarding_ranges_protocols_and_allowed_cidr(lab: Lab) -> None:
    lab.push(state())
    for vip_port, guest_port in ((6000, 7000), (6001, 7001), (6002, 7002)):   # shifted port for port
        assert lab.connect("inet", "tcp", PF_VIP, vip_port, src=GW) == f"{guest_port} {GW}"
    # a source outside allowedCidr is not forwarded (and the router itself does not answer)
    assert lab.connect("inet", "tcp", PF_VIP, 6001, src=OTHER, timeout=3).startswith("FAIL")
    for port in (7100, 7101):   # same ports, from anywhere
        assert lab.connect("inet", "tcp", PF_VIP, port, src=OTHER) == f"{port} {OTHER}"
    assert lab.connect("inet", "udp", PF_VIP, 5300, src=OTHER) == f"7053 {OTHER}"
    # only the forwarded ports: the guest's other ports and the VIP's other ports stay closed
    assert lab.connect("inet", "tcp", PF_VIP, 7000, src=GW, timeout=3).startswith("FAIL")
    assert lab.connect("inet", "tcp", PF_VIP, 7102, src=GW, timeout=3).startswith("FAIL")
    lab.push(state(pfs=False))
    assert lab.connect("inet", "tcp", PF_VIP, 7100, src=GW, timeout=3).startswith("FAIL")


def test_reapply_is_idempotent_and_a_flushed_ruleset_comes_back(lab: Lab) -> None:
    lab.push(state())
    before = lab.ruleset()
    addrs = ns("vr", "ip", "-o", "-4", "addr", "show").stdout
    dnsmasq = sh("ip", "netns", "pids", NS["vr"]).stdout.split()
    lab.push(state())
    assert lab.ruleset() == before
    assert ns("vr", "ip", "-o", "-4", "addr", "show").stdout == addrs
    assert sh("ip", "netns", "pids", NS["vr"]).stdout.split() == dnsmasq   # HUP, not a restart
    ns("vr", "nft", "flush", "ruleset")
    assert "zsvr" not in lab.ruleset()
    assert lab.connect("inet", "tcp", PF_VIP, 7100, src=GW, timeout=3).startswith("FAIL")
    lab.push(state())
    assert lab.ruleset() == before
    assert lab.connect("inet", "tcp", PF_VIP, 7100, src=GW) == f"7100 {GW}"
    assert lab.connect("guest1", "tcp", GW, 8000) == f"8000 {PUBLIC_IP}"
