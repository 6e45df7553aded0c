"""A DHCP + metadata namespace inside one testbed host (the prototype of a flat network's per-host ns).

Inside the host: netns ``name`` with a veth whose outer end is a port of the host's bridge, the DHCP server
IP plus 169.254.169.254/32 on a deterministic MAC, ebtables rules that keep its DHCP/ARP/metadata traffic on
this host (never through eth0), dnsmasq handing out exactly the configured MAC -> IP/hostname, and the test
metadata server (``metadata_server.py``) that identifies a guest by its source IP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab import LabHost

METADATA_IP = "169.254.169.254"
METADATA_SERVER = Path(__file__).resolve().parent / "metadata_server.py"


@dataclass(frozen=True)
class GuestRecord:
    """What DHCP and the metadata server know about one guest."""

    mac: str
    ip: str
    hostname: str
    instance_id: str
    user_data: str = ""
    public_keys: list[str] = field(default_factory=list)


def ssh_keypair(directory: Path, name: str = "id_ed25519") -> tuple[Path, str]:
    """Create (once) an ed25519 key pair in ``directory``; return (private key path, public key text)."""
    key = directory / name
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


class DhcpNamespace:
    """DHCP + metadata namespace ``name`` inside ``host``. ``start()`` undoes its steps if one fails;
    ``stop()`` is idempotent and removes the processes, the ebtables rules, the veth and the namespace."""

    def __init__(self, host: LabHost, workdir: Path, *, name: str = "dhcp-l3a", server_ip: str = "10.100.0.2",
                 prefixlen: int = 24, gateway: str = "10.100.0.1", mac: str = "02:00:0a:64:00:02",
                 metadata_route: bool = True) -> None:
        if len(name) > 13:
            raise ValueError(f"name: {name!r} is too long; at most 13 chars (veth names add 2)")
        self.host, self.name, self.server_ip, self.prefixlen = host, name, server_ip, prefixlen
        self.gateway, self.mac, self.metadata_route = gateway, mac, metadata_route
        self.dir = workdir / f"{host.name}-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.outer, self.inner = f"{name}-o", f"{name}-i"
        self.hosts_file, self.data_file = self.dir / "dhcp.hosts", self.dir / "metadata.json"
        self.request_log, self.lease_file = self.dir / "requests.jsonl", self.dir / "dnsmasq.leases"
        self.guests: dict[str, GuestRecord] = {}
        self._write_guests()

    # -- commands -------------------------------------------------------------------------------------
    def cmd(self, *argv: str) -> list[str]:
        """argv prefixed so that it runs inside this namespace (inside the host)."""
        return self.host.cmd("ip", "netns", "exec", self.name, *argv)

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(self.cmd(*argv), capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise subprocess.CalledProcessError(cp.returncode, cp.args, cp.stdout, cp.stderr)
        return cp

    def ssh(self, ip: str, key: Path, command: str, user: str = "root",
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the guest at ``ip`` over SSH (key login) from inside this namespace."""
        return self.run("ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
                        f"{user}@{ip}", command, check=False, timeout=timeout)

    # -- guests -----------------------------------------------------------------------------------------
    def add_guest(self, guest: GuestRecord) -> None:
        """Serve ``guest`` (DHCP host entry + metadata); dnsmasq re-reads its hosts file on SIGHUP."""
        self.guests[guest.ip] = guest
        self._write_guests()
        pid = self._pid(self.dir / "dnsmasq.pid", "dnsmasq")
        if pid:
            os.kill(pid, signal.SIGHUP)

    def _write_guests(self) -> None:
        lines = [f"{g.mac},{g.ip},{g.hostname},infinite" for g in self.guests.values()]
        self.hosts_file.write_text("".join(line + "\n" for line in lines))
        tmp = self.data_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({ip: asdict(g) for ip, g in self.guests.items()}))
        os.replace(tmp, self.data_file)

    def metadata_requests(self) -> list[dict]:
        """Requests the metadata server answered: {"src", "dst", "path", "status", "instance_id"}."""
        if not self.request_log.exists():
            return []
        return [json.loads(line) for line in self.request_log.read_text().splitlines() if line]

    def leases(self) -> dict[str, str]:
        """dnsmasq's lease file as MAC -> IP."""
        if not self.lease_file.exists():
            return {}
        return {f[1]: f[2] for f in (line.split() for line in self.lease_file.read_text().splitlines()) if len(f) > 2}

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> DhcpNamespace:
        try:
            self._plumb()
            self._start_dnsmasq()
            self._start_metadata()
        except BaseException:
            self.stop()
            raise
        return self

    def _plumb(self) -> None:
        h, ns = self.host, self.name
        h.run("ip", "netns", "add", ns)
        h.run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner, "netns", ns)
        h.run("ip", "link", "set", self.outer, "master", h.bridge, "up")
        h.run("ip", "-n", ns, "link", "set", "lo", "up")
        # the same MAC on every host: a migrated guest's ARP entry for the server stays right
        h.run("ip", "-n", ns, "link", "set", self.inner, "address", self.mac)
        h.run("ip", "-n", ns, "addr", "add", f"{self.server_ip}/{self.prefixlen}", "dev", self.inner)
        h.run("ip", "-n", ns, "addr", "add", f"{METADATA_IP}/32", "dev", self.inner)
        h.run("ip", "-n", ns, "link", "set", self.inner, "up")
        for rule in self._ebtables_rules():
            h.run("ebtables", "-A", *rule)

    def _ebtables_rules(self) -> list[list[str]]:
        return [["FORWARD", "-i", self.outer, "-o", "eth0", "-j", "DROP"],
                ["FORWARD", "-i", "eth0", "-o", self.outer, "-j", "DROP"]]

    def _start_dnsmasq(self) -> None:
        net = self.server_ip.rsplit(".", 1)[0] + ".0"
        opts = [f"--dhcp-option=3,{self.gateway}"]
        if self.metadata_route:  # RFC 3442: with option 121 the router option is ignored, so add 0/0 too
            opts.append(f"--dhcp-option=121,{METADATA_IP}/32,{self.server_ip},0.0.0.0/0,{self.gateway}")
        self.run("dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0", "-u", "root",
                 f"--interface={self.inner}", "--bind-interfaces", "--except-interface=lo",
                 f"--dhcp-range={net},static,255.255.255.0,infinite", f"--dhcp-hostsfile={self.hosts_file}",
                 *opts, f"--dhcp-leasefile={self.lease_file}", f"--pid-file={self.dir / 'dnsmasq.pid'}",
                 "--log-dhcp", f"--log-facility={self.dir / 'dnsmasq.log'}")

    def _start_metadata(self) -> None:
        pidfile = self.dir / "metadata.pid"
        pidfile.unlink(missing_ok=True)
        with open(self.dir / "metadata.out", "w") as out:
            subprocess.run(self.cmd("setsid", "-f", sys.executable, str(METADATA_SERVER), "--data",
                                    str(self.data_file), "--log", str(self.request_log), "--pidfile", str(pidfile)),
                           check=True, stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=30)
        deadline = time.monotonic() + 15
        while not pidfile.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"metadata server did not start: {(self.dir / 'metadata.out').read_text()}")
            time.sleep(0.05)

    @staticmethod
    def _pid(pidfile: Path, name: str) -> int | None:
        """The pid from ``pidfile`` if that process runs and its command line contains ``name``."""
        try:
            pid = int(pidfile.read_text().strip())
            alive = name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if alive else None

    def stop(self) -> None:
        for pidfile, name in ((self.dir / "metadata.pid", "metadata_server"), (self.dir / "dnsmasq.pid", "dnsmasq")):
            pid = self._pid(pidfile, name)
            if pid:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while self._pid(pidfile, name) and time.monotonic() < deadline:
                    time.sleep(0.02)
            pidfile.unlink(missing_ok=True)
        for rule in self._ebtables_rules():
            self.host.run("ebtables", "-D", *rule, check=False)
        self.host.run("ip", "link", "del", self.outer, check=False)
        self.host.run("ip", "netns", "del", self.name, check=False)

    def __enter__(self) -> DhcpNamespace:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
