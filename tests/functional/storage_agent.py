"""Test helper: an in-process agent app on loopback serving the storage endpoints.

Uses the real agent server factory ``kvmagent.server.create_app`` when it exists; otherwise a minimal
aiohttp app that mounts exactly the registered storage handlers and :func:`raw_routes` behind a bearer
token check, with the agent's error envelope.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
from aiohttp import web

import kvmagent.handlers.storage as storage_handlers
from kvmagent.contract.base import AgentError, AgentRequest
from kvmagent.routing import ENDPOINTS
from storage.service import StorageService


@dataclass
class Ctx:
    storage: StorageService


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.headers.get("Authorization") != f"Bearer {request.app['token']}":
        return web.json_response(AgentError("AGENT.UNAUTHORIZED", "bad token", status=401).body(), status=401)
    return await handler(request)


def _json_handler(ctx: Ctx, ep: Any) -> Any:
    async def handle(request: web.Request) -> web.Response:
        try:
            cmd = ep.request.model_validate(await request.json())
            reply = await ep.handler(ctx, cmd)
        except pydantic.ValidationError as e:
            return web.json_response(AgentError("AGENT.INVALID", str(e), status=400).body(), status=400)
        except AgentError as e:
            return web.json_response(e.body(), status=e.status)
        return web.json_response(reply.model_dump())
    return handle


def minimal_app(service: StorageService, token: str) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app["token"] = token
    ctx = Ctx(service)
    for path, ep in ENDPOINTS.items():
        if ep.handler.__module__ == storage_handlers.__name__:
            app.router.add_post(path, _json_handler(ctx, ep))
    app.router.add_routes(storage_handlers.raw_routes(ctx))
    return app


class Agent:
    """One running agent on 127.0.0.1:<random port> with its own state dir and token."""

    def __init__(self, state_dir: Path) -> None:
        self.service = StorageService(state_dir=state_dir)
        self.token = secrets.token_hex(16)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> Agent:
        await self.service.start()
        self.runner = web.AppRunner(minimal_app(self.service, self.token))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self.http:
            await self.http.close()
        if self.runner:
            await self.runner.cleanup()
        await self.service.stop()

    async def call(self, cmd: AgentRequest, *, expect: int = 200) -> Any:
        """POST a command; return the typed reply (200) or the error body (any other expected status)."""
        assert self.http is not None
        async with self.http.post(self.url + cmd.PATH, json=cmd.model_dump(exclude_none=True),
                                  headers={"Authorization": f"Bearer {self.token}",
                                           "X-Request-Id": secrets.token_hex(8)}) as resp:
            body = await resp.json()
            assert resp.status == expect, (resp.status, body)
            return cmd.Reply.model_validate(body) if resp.status == 200 else body
