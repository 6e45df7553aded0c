"""Is an IPv4 address already in use on an L2? An ARP probe (RFC 5227: sender IP 0.0.0.0, so no neighbour
cache anywhere learns anything) sent on the host's bridge of that L2, with a short bound.

Used before a virtual router takes its addresses (1.0 pinged the management IP from the management node,
which needs a route to it; the probe needs only the bridge the router will be plugged into). A raw
``AF_PACKET`` socket: no external program, no shell; root only (the host agent).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from pathlib import Path

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def _mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def _mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def probe_frame(src_mac: bytes, ip: str) -> bytes:
    """An Ethernet broadcast ARP request for ``ip`` from ``src_mac`` with sender IP 0.0.0.0 (a probe)."""
    target = ipaddress.IPv4Address(ip).packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src_mac, b"\0" * 4, b"\0" * 6, target)
    return BROADCAST + src_mac + struct.pack("!H", ETH_P_ARP) + arp


def holder(frame: bytes, ip: str, own_mac: bytes) -> str | None:
    """The MAC of whoever ``frame`` shows using ``ip`` (an ARP reply or request sent from it), else None."""
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    _htype, ptype, _hlen, _plen, op, sha, spa = struct.unpack("!HHBBH6s4s", frame[14:32])
    if ptype != 0x0800 or op not in (1, 2) or sha == own_mac:
        return None
    return _mac_str(sha) if spa == ipaddress.IPv4Address(ip).packed else None


def probe(ifname: str, ip: str, timeout: float = 1.5, tries: int = 2) -> str | None:
    """The MAC that answers for ``ip`` on ``ifname`` within ``timeout`` seconds, or None. ``tries`` probes
    are spread over the bound. Raises FileNotFoundError when the interface does not exist."""
    addr = Path("/sys/class/net") / ifname / "address"
    own = _mac_bytes(addr.read_text().strip())
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    try:
        s.bind((ifname, ETH_P_ARP))
        frame = probe_frame(own, ip)
        start = time.monotonic()
        deadline = start + timeout
        sent = 0
        while True:
            now = time.monotonic()
            if sent < tries and now >= start + sent * timeout / tries:
                s.send(frame)
                sent += 1
            if now >= deadline:
                return None
            next_send = start + sent * timeout / tries if sent < tries else deadline
            ready, _, _ = select.select([s], [], [], max(0.0, min(deadline, next_send) - now))
            if ready:
                mac = holder(s.recv(2048), ip, own)
                if mac is not None:
                    return mac
    finally:
        s.close()
