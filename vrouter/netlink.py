"""The few rtnetlink calls the router agent makes per address, in-process (standard library only): a router
with hundreds of VIPs would otherwise spawn hundreds of ``ip``/``arping`` processes on its first apply, which
under TCG costs seconds. Also reads of the link flags and the default route (sysfs, /proc)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from pathlib import Path
from types import TracebackType

RTM_NEWLINK, RTM_NEWADDR, RTM_DELADDR = 16, 20, 21
_NLMSG_ERROR = 2
_F_REQUEST, _F_ACK, _F_EXCL, _F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_IFF_UP = 0x1
_HDR = struct.Struct("=IHHII")


class NetlinkError(OSError):
    pass


class Route:
    """A NETLINK_ROUTE socket; each request is acknowledged before the next (errors raise NetlinkError)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def __enter__(self) -> Route:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.sock.close()

    def _request(self, kind: int, flags: int, body: bytes, what: str) -> None:
        self.seq += 1
        self.sock.send(_HDR.pack(_HDR.size + len(body), kind, _F_REQUEST | _F_ACK | flags, self.seq, 0) + body)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _, seq, _ = _HDR.unpack_from(data, off)
                if mtype == _NLMSG_ERROR and seq == self.seq:
                    (err,) = struct.unpack_from("=i", data, off + _HDR.size)
                    if err:
                        raise NetlinkError(-err, f"{what}: {os.strerror(-err)}")
                    return
                off += max((length + 3) & ~3, _HDR.size)

    def address(self, kind: int, index: int, cidr: str) -> None:
        """Add (RTM_NEWADDR) or delete (RTM_DELADDR) ``a.b.c.d/n`` on the interface ``index``."""
        iface = ipaddress.IPv4Interface(cidr)
        ip = iface.ip.packed
        attrs = struct.pack("=HH4s", 8, _IFA_LOCAL, ip) + struct.pack("=HH4s", 8, _IFA_ADDRESS, ip)
        body = struct.pack("=BBBBI", socket.AF_INET, iface.network.prefixlen, 0, 0, index) + attrs
        flags = _F_CREATE | _F_EXCL if kind == RTM_NEWADDR else 0
        self._request(kind, flags, body, f"{'add' if kind == RTM_NEWADDR else 'delete'} {cidr} on if#{index}")

    def link_up(self, index: int) -> None:
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, _IFF_UP, _IFF_UP)
        self._request(RTM_NEWLINK, 0, body, f"set if#{index} up")


def is_up(ifname: str) -> bool:
    return bool(int(Path(f"/sys/class/net/{ifname}/flags").read_text(), 16) & _IFF_UP)


def default_route() -> tuple[str, str] | None:
    """(interface, gateway) of the main table's IPv4 default route, from /proc/net/route."""
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        f = line.split()
        if len(f) > 7 and f[1] == "00000000" and f[7] == "00000000":
            return f[0], socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
    return None


def gratuitous_arps(ifname: str, ips: list[str]) -> None:
    """One unsolicited ARP request per address in ``ips`` from the interface's MAC (best effort, like
    ``arping -U``), all from one packet socket: opening and closing one costs an RCU grace period (~13 ms),
    which for hundreds of VIPs was most of a push."""
    if not ips:
        return
    try:
        mac = bytes.fromhex(Path(f"/sys/class/net/{ifname}/address").read_text().strip().replace(":", ""))
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            for ip in ips:
                addr = socket.inet_aton(ip)
                s.send(b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr +
                       b"\x00" * 6 + addr)
    except OSError:
        pass
