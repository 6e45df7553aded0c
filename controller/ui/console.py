"""The VM console in the browser: noVNC over a same-origin WebSocket that the controller proxies to the VM's
VNC port on its host.

``GET /ui/vms/{uuid}/console`` asks ``GetVmConsoleAddress`` (through the API dispatcher, under the user's
session: the VM must be Running) and issues a console token: random, one-time, valid ``TOKEN_TTL`` seconds,
bound to that session and that VM. ``GET /ui/console/ws?token=..&vm=..`` takes the token (a second use finds
nothing), checks expiry, session and VM, then pumps bytes between the WebSocket and ``hostIp:port``. The
token is never the session uuid and never appears in a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from controller.ui.resources import BY_SLUG
from controller.ui.views import nav
from controller.ui.web import api, page, render, session_from_cookie

log = logging.getLogger(__name__)

TOKEN_TTL = 30.0


@dataclass(frozen=True)
class Grant:
    session_uuid: str
    vm_uuid: str
    host: str
    port: int
    expires: float


class ConsoleTokens:
    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        self._grants: dict[str, Grant] = {}

    def issue(self, session_uuid: str, vm_uuid: str, host: str, port: int) -> str:
        now = time.monotonic()
        self._grants = {t: g for t, g in self._grants.items() if g.expires > now}
        token = secrets.token_urlsafe(32)
        self._grants[token] = Grant(session_uuid, vm_uuid, host, port, now + self.ttl)
        return token

    def take(self, token: str, session_uuid: str | None, vm_uuid: str) -> tuple[Grant | None, str]:
        """The grant of ``token`` (removed: one use) or None and why."""
        grant = self._grants.pop(token, None) if token else None
        if grant is None:
            return None, "missing, unknown or already used console token"
        if grant.expires <= time.monotonic():
            return None, "expired console token"
        if session_uuid is None or not secrets.compare_digest(grant.session_uuid, session_uuid):
            return None, "the console token belongs to another session"
        if grant.vm_uuid != vm_uuid:
            return None, "the console token belongs to another VM"
        return grant, ""


TOKENS = web.AppKey("ui_console_tokens", ConsoleTokens)


def tokens(app: web.Application) -> ConsoleTokens:
    t = app.get(TOKENS)
    if t is None:
        t = ConsoleTokens()
        app[TOKENS] = t
    return t  # type: ignore[no-any-return]


async def console_page(request: web.Request) -> web.Response:
    p = page(request)
    vm_uuid = request.match_info["uuid"]
    out = await api(request, "GetVmConsoleAddress", {"uuid": vm_uuid})
    ctx = {**nav(), "res": BY_SLUG["vms"], "vm_uuid": vm_uuid, "call": out, "error": out.error(p), "token": "",
           "protocol": out.reply.get("protocol", ""), "password": out.reply.get("password", "")}
    if out.ok and out.reply.get("protocol") == "vnc" and p.session is not None:
        ctx["token"] = tokens(request.app).issue(p.session.uuid, vm_uuid, str(out.reply["hostIp"]),
                                                 int(out.reply["port"]))
    resp = render(request, "console.html", ctx, status=200 if out.ok else out.status)
    resp.headers["Cache-Control"] = "no-store"  # the page carries the console password and a token
    return resp


async def _admit(request: web.Request) -> Grant:
    """The grant of the request's token, or 403 (foreign origin; missing, expired, reused or foreign token)."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise web.HTTPForbidden(text=f"console refused: the page's origin {origin} is not this controller")
    sess = await session_from_cookie(request)
    grant, why = tokens(request.app).take(request.query.get("token", ""), sess.uuid if sess else None,
                                          request.query.get("vm", ""))
    if grant is None:
        raise web.HTTPForbidden(text=f"console refused: {why}")
    return grant


async def _pump(ws: web.WebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes both ways until either side closes."""

    async def vnc_to_browser() -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            await ws.send_bytes(data)

    async def browser_to_vnc() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                writer.write(msg.data)
            elif msg.type == WSMsgType.TEXT:
                writer.write(msg.data.encode())
            else:
                break
            await writer.drain()

    pumps = [asyncio.create_task(vnc_to_browser()), asyncio.create_task(browser_to_vnc())]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in pumps:
            t.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def console_ws(request: web.Request) -> web.StreamResponse:
    grant = await _admit(request)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(grant.host, grant.port), 10)
    except (OSError, TimeoutError) as e:
        raise web.HTTPBadGateway(text=f"cannot reach the VM's console at {grant.host}:{grant.port}: {e}") from e
    ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=16 * 1024 * 1024, heartbeat=30)
    await ws.prepare(request)
    log.info("console of vm %s opened (host %s:%s)", grant.vm_uuid, grant.host, grant.port)
    try:
        await _pump(ws, reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        await ws.close()
        log.info("console of vm %s closed", grant.vm_uuid)
    return ws
