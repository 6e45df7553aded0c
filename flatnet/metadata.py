"""One aiohttp application serving metadata and user data to every L3 namespace on the host.

For each L3, listening sockets are created INSIDE its namespace (a short-lived helper thread enters the
namespace with setns(2), opens and binds the socket, and exits) and handed to the app with
``web.SockSite``. The server tells L3s apart by the network-namespace cookie of the accepted connection
(``SO_NETNS_COOKIE``), and the VM by the connection's source IP, which the per-tap anti-spoofing rules make
trustworthy. Unknown callers get 404; a VM only ever sees its own entry.

Guests must not be able to exhaust the agent: every connection passes :mod:`flatnet.connlimit` (per-source
limit, global cap, hard lifetime), idle keep-alive connections close after a few seconds, and bodies are
capped (the server answers GETs only).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from flatnet import connlimit
from flatnet.connlimit import ConnectionLimiter, GuardedProtocol
from flatnet.mdlayout import password_reply, resolve
from flatnet.model import UserdataSpec

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71
_libc = ctypes.CDLL(None, use_errno=True)


def netns_cookie(sock: socket.socket) -> int:
    return int(struct.unpack("Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0])


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def socket_in_netns(netns: str, ip: str, port: int) -> socket.socket:
    """A listening TCP socket bound to ``ip:port`` inside network namespace ``netns``.

    The namespace switch happens in a fresh thread that ends afterwards, so no thread of the agent is left
    in another namespace."""
    result: dict[str, object] = {}

    def work() -> None:
        try:
            with open(f"/run/netns/{netns}") as target:
                _setns(target.fileno())
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            s.listen(128)
            s.setblocking(False)
            result["sock"] = s
        except BaseException as e:
            result["error"] = e

    t = threading.Thread(target=work, name=f"netns-socket-{netns}")
    t.start()
    t.join()
    if "error" in result:
        raise OSError(f"cannot listen on {ip}:{port} in namespace {netns}: {result['error']}")
    sock = result["sock"]
    assert isinstance(sock, socket.socket)
    return sock


def _source_key(transport: Any) -> connlimit.Key:
    sock = transport.get_extra_info("socket")
    peer = transport.get_extra_info("peername")
    return netns_cookie(sock), str(peer[0])


class _GuardedSite(web.SockSite):
    """A SockSite whose connections go through the limiter before aiohttp sees them."""

    __slots__ = ("_lifetime", "_limiter")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, limiter: ConnectionLimiter,
                 lifetime: float) -> None:
        super().__init__(runner, sock)
        self._limiter = limiter
        self._lifetime = lifetime

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedProtocol(self._limiter, server, _source_key, self._lifetime),
            sock=self._sock, backlog=self._backlog)


@dataclass
class _L3Sites:
    netns: str
    cookie: int
    sites: list[_GuardedSite] = field(default_factory=list)
    addrs: frozenset[tuple[str, int]] = frozenset()


class MetadataServer:
    """Owns the app, its runner and the per-L3 sites. Entries change take effect on the next request."""

    def __init__(self, *, http_port: int = 80, password_port: int | None = 8080,
                 per_source: int = connlimit.PER_SOURCE, max_connections: int | None = None,
                 keepalive: float = connlimit.KEEPALIVE, lifetime: float = connlimit.LIFETIME) -> None:
        self.http_port = http_port
        self.password_port = password_port
        self.limiter = ConnectionLimiter(per_source=per_source, total=max_connections)
        self._lifetime = lifetime
        self._entries: dict[tuple[str, str], UserdataSpec] = {}
        self._saved: set[tuple[str, str]] = set()
        self._l3: dict[str, _L3Sites] = {}
        self._by_cookie: dict[int, str] = {}
        app = web.Application(client_max_size=64 << 10)
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive, shutdown_timeout=1.0)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self._runner.setup()
            self._started = True

    async def stop(self) -> None:
        for l3 in list(self._l3):
            await self.remove_l3(l3)
        if self._started:
            await self._runner.cleanup()
            self._started = False

    # --- entries -------------------------------------------------------------------------------------
    def set_entries(self, entries: dict[tuple[str, str], UserdataSpec]) -> None:
        """Serve exactly ``entries`` ((l3 uuid, VM IP) → spec) from now on; a changed entry forgets that the
        VM saved its password."""
        self._saved = {k for k in self._saved if k in entries and entries[k] == self._entries.get(k)}
        self._entries = dict(entries)

    def entry_count(self, l3_uuid: str) -> int:
        return sum(1 for k in self._entries if k[0] == l3_uuid)

    # --- listeners -----------------------------------------------------------------------------------
    def listening(self, l3_uuid: str) -> list[tuple[str, int]]:
        s = self._l3.get(l3_uuid)
        return sorted(s.addrs) if s else []

    async def ensure_l3(self, l3_uuid: str, netns: str, dhcp_ip: str, metadata_ip: str) -> None:
        """Listen on ``dhcp_ip`` and ``metadata_ip`` (port 80) and the password port on ``dhcp_ip``, in
        ``netns``. Idempotent; rebinds when the addresses changed. Cleans up on failure."""
        want = {(dhcp_ip, self.http_port), (metadata_ip, self.http_port)}
        if self.password_port:
            want.add((dhcp_ip, self.password_port))
        cur = self._l3.get(l3_uuid)
        if cur and cur.netns == netns and cur.addrs == want:
            return
        await self.remove_l3(l3_uuid)
        entry = _L3Sites(netns=netns, cookie=0, addrs=frozenset(want))
        try:
            for ip, port in sorted(want):
                sock = socket_in_netns(netns, ip, port)
                entry.cookie = netns_cookie(sock)
                site = _GuardedSite(self._runner, sock, self.limiter, self._lifetime)
                entry.sites.append(site)
                await site.start()
        except BaseException:
            for site in entry.sites:
                await site.stop()
            raise
        self._l3[l3_uuid] = entry
        self._by_cookie[entry.cookie] = l3_uuid

    async def remove_l3(self, l3_uuid: str) -> None:
        entry = self._l3.pop(l3_uuid, None)
        if entry is None:
            return
        self._by_cookie.pop(entry.cookie, None)
        for site in entry.sites:
            await site.stop()

    # --- requests ------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        local = request.transport.get_extra_info("sockname") if request.transport else None
        l3 = self._by_cookie.get(netns_cookie(sock)) if sock is not None else None
        spec = self._entries.get((l3, peer[0])) if l3 and peer else None
        if local and self.password_port and local[1] == self.password_port:
            return self._password(spec, request)
        if spec is None:
            log.info("metadata: unknown caller %s on L3 %s asked %s", peer, l3, request.path)
            return web.Response(status=404, text="not found\n")
        status, body = resolve(spec, request.path)
        return web.Response(status=status, body=body.encode(), content_type="text/plain", charset="utf-8")

    def _password(self, spec: UserdataSpec | None, request: web.Request) -> web.Response:
        key = (spec.l3_uuid, spec.vm_ip) if spec else ("", "")
        body, saved = password_reply(spec, request.headers.get("DomU_Request"), key in self._saved)
        if saved and spec:
            self._saved.add(key)
        return web.Response(text=body)
