"""dnsmasq for one L3 network: configuration rendering (pure) and the process (found by pid file + cmdline).

Layout under the L3's state directory ``<state>/flatnet/<key>/``:
``dnsmasq.conf``, ``hosts/<tag>`` (one ``dhcp-host`` line per NIC), ``opts/<tag>`` (that NIC's options),
``leases``, ``dnsmasq.pid``, ``dnsmasq.log`` (bounded: quiet DHCP logging, rotated by :func:`rotate_log`).
New files in ``hosts``/``opts`` are read by dnsmasq through
inotify; changed or removed ones need SIGHUP (dnsmasq keeps what it read until then).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flatnet.model import L3Spec, NicSpec
from flatnet.names import METADATA_IP, l3_names, nic_tag
from zsutil.runner import run

Route = tuple[str, str]  # (destination CIDR, router)


@dataclass(frozen=True)
class DnsmasqPaths:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "dnsmasq.conf"

    @property
    def hosts_dir(self) -> Path:
        return self.root / "hosts"

    @property
    def opts_dir(self) -> Path:
        return self.root / "opts"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    @property
    def pid_file(self) -> Path:
        return self.root / "dnsmasq.pid"

    @property
    def log(self) -> Path:
        return self.root / "dnsmasq.log"


def render_conf(l3: L3Spec, paths: DnsmasqPaths, *, log_dhcp: bool = False) -> str:
    """The dnsmasq.conf of ``l3``: DHCP only (port=0), static addresses from the per-NIC files only."""
    net = l3.network
    lines = [
        f"# zstack-py flatnet, L3 {l3.uuid}; generated, do not edit",
        "port=0", "no-resolv", "no-hosts", "user=root", "group=root",
        f"interface={l3_names(l3.uuid).inner}", "except-interface=lo", "bind-interfaces",
        f"dhcp-range={net.network_address},static,{net.netmask},infinite",
        f"dhcp-hostsdir={paths.hosts_dir}", f"dhcp-optsdir={paths.opts_dir}",
        f"dhcp-leasefile={paths.leases}", f"pid-file={paths.pid_file}",
        "dhcp-authoritative", "dhcp-lease-max=65535", f"log-facility={paths.log}",
    ]
    # Every DHCP exchange would be a log line forever (a guest renewing in a loop fills the disk): only
    # errors and start-up are logged, and the file is rotated (rotate_log). ``log_dhcp`` is for debugging.
    lines += ["log-dhcp"] if log_dhcp else ["quiet-dhcp", "quiet-dhcp6", "quiet-ra"]
    return "\n".join(lines) + "\n"


LOG_MAX_BYTES = 1 << 20


def rotate_log(paths: DnsmasqPaths, max_bytes: int = LOG_MAX_BYTES) -> bool:
    """Keep ``dnsmasq.log`` bounded: past ``max_bytes`` it becomes ``dnsmasq.log.1`` (replacing the previous
    one) and dnsmasq reopens its log on SIGUSR2. At most 2 × ``max_bytes`` plus what is written between two
    checks. True when rotated."""
    try:
        if paths.log.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    os.replace(paths.log, paths.log.with_name(paths.log.name + ".1"))
    pid = find_pid(paths)
    if pid is not None:
        os.kill(pid, signal.SIGUSR2)
    return True


def host_line(nic: NicSpec) -> str:
    """The ``dhcp-host`` line of ``nic`` (short hostname: dnsmasq rejects a domain it does not serve)."""
    parts = [nic.mac, f"set:{nic_tag(nic.mac)}", nic.ip]
    if nic.hostname:
        parts.append(nic.hostname.split(".")[0])
    parts.append("infinite")
    return ",".join(parts) + "\n"


def nic_routes(nic: NicSpec, l3: L3Spec) -> list[Route]:
    """Option 121 routes: the metadata address via the DHCP IP, plus the default route on the default L3
    (RFC 3442: a client that takes option 121 ignores option 3, so the default route must be in it)."""
    routes: list[Route] = [(f"{METADATA_IP}/32", l3.dhcp_ip)]
    gw = nic.gateway or l3.gateway
    if nic.default_l3 and gw:
        routes.append(("0.0.0.0/0", gw))
    return routes


def classless_routes(routes: Sequence[Route]) -> str:
    """dnsmasq's text form of option 121: ``dst/len,router,...``."""
    return ",".join(f"{ipaddress.IPv4Network(d)},{ipaddress.IPv4Address(r)}" for d, r in routes)


def encode_rfc3442(routes: Sequence[Route]) -> bytes:
    """Option 121's wire encoding (RFC 3442): width, significant destination octets, router."""
    out = bytearray()
    for dst, router in routes:
        net = ipaddress.IPv4Network(dst)
        width = net.prefixlen
        out.append(width)
        out += net.network_address.packed[: (width + 7) // 8]
        out += ipaddress.IPv4Address(router).packed
    return bytes(out)


def opts_lines(nic: NicSpec, l3: L3Spec) -> str:
    """Per-NIC options as 1.0 set them: the default-L3 NIC gets router, DNS and domain, others blank
    router/DNS; every NIC gets its netmask and option 121."""
    t = f"tag:{nic_tag(nic.mac)}"
    lines = [f"{t},option:netmask,{nic.netmask}"]
    gw = nic.gateway or l3.gateway
    if nic.default_l3:
        lines.append(f"{t},option:router,{gw}" if gw else f"{t},3")
        lines.append(f"{t},option:dns-server,{','.join(l3.dns)}" if l3.dns else f"{t},6")
        if l3.dns_domain:
            lines.append(f"{t},option:domain-name,{l3.dns_domain}")
    else:
        lines += [f"{t},3", f"{t},6"]
    lines.append(f"{t},option:classless-static-route,{classless_routes(nic_routes(nic, l3))}")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` via a dot-file rename (dnsmasq ignores dot-files); False if unchanged."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def find_pid(paths: DnsmasqPaths) -> int | None:
    """The pid of the dnsmasq serving ``paths.conf``, from the pid file, checked against /proc cmdline."""
    try:
        pid = int(paths.pid_file.read_text().strip())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    if any(os.path.basename(c) == b"dnsmasq" for c in cmd[:1]) and \
            f"--conf-file={paths.conf}".encode() in cmd:
        return pid
    return None


async def start(netns: str, paths: DnsmasqPaths) -> int:
    """Start dnsmasq in ``netns``; returns its pid. dnsmasq reports configuration errors before
    daemonizing, so a bad configuration raises ProcessError here."""
    await run(["ip", "netns", "exec", netns, "dnsmasq", f"--conf-file={paths.conf}"], timeout=10)
    for _ in range(100):
        pid = find_pid(paths)
        if pid:
            return pid
        await asyncio.sleep(0.02)
    raise RuntimeError(f"dnsmasq for {paths.conf} started but wrote no pid file {paths.pid_file}")


async def stop(paths: DnsmasqPaths) -> None:
    """Stop the dnsmasq of ``paths`` (SIGTERM, SIGKILL after 3 s). Succeeds if none runs."""
    pid = find_pid(paths)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    for i in range(150):
        if find_pid(paths) != pid:
            break
        if i == 100:
            os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.02)
    paths.pid_file.unlink(missing_ok=True)


def hup(paths: DnsmasqPaths) -> bool:
    """SIGHUP the dnsmasq of ``paths`` (re-read hosts/opts dirs); False if none runs."""
    pid = find_pid(paths)
    if pid is None:
        return False
    os.kill(pid, signal.SIGHUP)
    return True


async def release_lease(netns: str, iface: str, ip: str, mac: str) -> None:
    """Drop the lease of a removed NIC (dhcp_release, as Neutron does), so the address can be reused by
    another MAC at once; best effort when the tool is missing."""
    await run(["ip", "netns", "exec", netns, "dhcp_release", iface, ip, mac], timeout=5, ok_codes=(0, 1))
