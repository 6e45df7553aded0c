"""An in-process agent over libvirt's test driver (or the real backend) plus a fake controller."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from kvmagent.config import AgentConfig
from kvmagent.driver.libvirt_driver import LibvirtDriver
from kvmagent.driver.testnode import write_node_xml
from kvmagent.server import CTX, create_app, wait_ready

TOKEN = "contract-token-0123456789"


@dataclass
class FakeController:
    """Records agent event reports; ``up`` False answers 503 (the controller is "away")."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    up: bool = True
    auth: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        async def events(request: web.Request) -> web.Response:
            self.auth.append(request.headers.get("Authorization", ""))
            if not self.up:
                return web.json_response({"error": "away"}, status=503)
            self.reports.append(await request.json())
            self.times.append(asyncio.get_running_loop().time())
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/v1/agent/events", events)
        return app


@dataclass
class Agent:
    app: web.Application
    server: TestServer
    session: ClientSession
    config: AgentConfig

    @property
    def ctx(self) -> Any:
        return self.app[CTX]

    async def call(self, path: str, body: dict[str, Any] | None = None, *, token: str = TOKEN,
                   request_id: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        if request_id:
            headers["X-Request-Id"] = request_id
        async with self.session.post(self.server.make_url(path), json=body or {}, headers=headers) as r:
            return r.status, await r.json()


@asynccontextmanager
async def running_agent(tmp: Path, *, controller_url: str | None = None, uri: str | None = None,
                        judger_ttl: float = 10.0, flatnet: Any = None) -> AsyncIterator[Agent]:
    uri = uri or write_node_xml(tmp / "node.xml")
    config = AgentConfig(host_uuid=uuid.uuid4().hex, token=TOKEN, controller_url=controller_url,
                         listen_ip="127.0.0.1", port=0, libvirt_uri=uri, state_dir=tmp / "state",
                         log_dir=tmp / "log")
    app = create_app(config, driver=LibvirtDriver(uri, state_dir=config.state_dir, poll_interval=0.05),
                     reporter_backoff=(0.05, 0.5), judger_ttl=judger_ttl, flatnet=flatnet)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    session = ClientSession()
    try:
        async with asyncio.timeout(20):
            await wait_ready(app)
        yield Agent(app, server, session, config)
    finally:
        await session.close()
        await server.close()


@asynccontextmanager
async def fake_controller() -> AsyncIterator[tuple[FakeController, str]]:
    fc = FakeController()
    server = TestServer(fc.app(), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield fc, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def start_body(vm_uuid: str, root: str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uuid": vm_uuid, "internalId": 7, "name": "vm", "cpuNum": 1, "cpuSpeed": 1000, "memory": 64 << 20,
        "rootVolume": {"path": root, "uuid": "a" * 32}, "hostManagementIp": "127.0.0.1"}
    body.update(kw)
    return body
