"""Agent traffic over TLS (issue 18, security 10) against real in-process agents and a real controller:
agents serve HTTPS with certificates from the controller's CA; the controller's agent client, the events
channel and every other client are checked: the right CA and name pass, anything else is refused."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_controller_compute import Env, _records

from controller import pki
from controller.app import create_app
from controller.compute.hosts import add_connected_host
from controller.config import ControllerConfig
from controller.errors import AgentUnavailable
from kvmagent.config import AgentConfig
from kvmagent.contract.tls import CONTROLLER_NAME, client_context
from kvmagent.driver.base import VmState
from kvmagent.driver.libvirt_driver import LibvirtDriver
from kvmagent.driver.testnode import write_node_xml
from kvmagent.events import EventReporter
from kvmagent.metrics import Metrics
from kvmagent.server import CTX, wait_ready
from kvmagent.server import create_app as agent_app
from storage.service import StorageService

GiB = 1 << 30


@dataclass
class TlsAgent:
    ip: str
    config: AgentConfig
    runner: web.AppRunner
    app: web.Application

    @property
    def url(self) -> str:
        return f"https://{self.ip}:7070"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}"}


def write_tls(ca: pki.Ca, d: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """Issue a certificate for ``names`` and write cert, key and CA the way a deploy does."""
    d.mkdir(parents=True, exist_ok=True)
    issued = pki.issue(ca, "test agent", names)
    cert, key, cafile = d / "agent.crt", d / "agent.key", d / "ca.crt"
    pki.write_private(cert, issued.cert_pem)
    pki.write_private(key, issued.key_pem)
    pki.write_private(cafile, ca.cert_pem)
    return cert, key, cafile


async def start_tls_agent(base: Path, ip: str, controller_url: str, ca: pki.Ca,
                          names: list[str] | None = None) -> TlsAgent:
    hu = uuid.uuid4().hex
    sd = base / hu
    uri = write_node_xml(sd / "node.xml", cpus=4, mhz=2000, memory_bytes=8 * GiB, bridges=("br_eth0",))
    cert, key, cafile = write_tls(ca, sd / "tls", names or [ip])
    cfg = AgentConfig(host_uuid=hu, token=secrets.token_hex(16), controller_url=controller_url, listen_ip=ip,
                      port=7070, libvirt_uri=uri, domain_type="qemu", state_dir=sd, log_dir=sd / "log",
                      storage_roots=[str(base.parent)], tls_cert=cert, tls_key=key, tls_ca=cafile)
    app = agent_app(cfg, driver=LibvirtDriver(uri, state_dir=sd, domain_type="qemu"),
                    storage=StorageService(sd), reporter_backoff=(0.05, 0.5))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, ip, 7070, ssl_context=pki.server_context(cert, key)).start()
    await asyncio.wait_for(wait_ready(app), 30)
    return TlsAgent(ip, cfg, runner, app)


class TlsEnv(Env):
    tls_agents: list[TlsAgent]
    events_url: str


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[TlsEnv]:
    cfg = ControllerConfig(db_path=str(tmp_path / "c.db"), log_dir=str(tmp_path / "log"), listen_host="127.0.0.1",
                           agent_tls_port=0, allow_host_local_images=True, image_import_dirs=[str(tmp_path)])
    server = TestServer(create_app(cfg), host="127.0.0.1")
    async with TestClient(server) as client:
        e = TlsEnv(client, f"http://127.0.0.1:{server.port}")
        e.tls_agents = []
        await e.login()
        await _records(e, tmp_path)
        tls = e.core.services["tls"]
        e.events_url = f"https://127.0.0.1:{await tls.events_listener()}"
        try:
            for i in range(2):
                a = await start_tls_agent(tmp_path / "agents", f"127.0.9.{31 + i}", e.events_url, tls.ca)
                e.tls_agents.append(a)
                await add_connected_host(e.core, name=f"t{i}", cluster_uuid=e.ids["cluster"], ip=a.ip, port=7070,
                                         token=a.config.token, controller_url=e.events_url,
                                         uuid=a.config.host_uuid, tls=True)
            yield e
        finally:
            for a in e.tls_agents:
                await a.runner.cleanup()


async def test_connect_vms_and_events_over_tls(env: TlsEnv) -> None:
    hosts = await env.hosts()
    assert {h["status"] for h in hosts} == {"Connected"} and len(hosts) == 2
    assert all("agentTls" not in h for h in hosts)
    rows = await env.core.db.fetchall("SELECT agentTls FROM Host")
    assert {r["agentTls"] for r in rows} == {1}
    st, vm = await env.create_vm("over-tls")
    assert st == 200, vm
    vm = vm["inventory"]
    assert vm["state"] == "Running"
    # The events channel: the agent's reporter posts to the controller's TLS listener (pinned CA + name).
    agent = next(a for a in env.tls_agents if a.config.host_uuid == vm["hostUuid"])
    ctx = agent.app[CTX]
    assert ctx.events.controller_url == env.events_url
    ctx.events.report_state(vm["uuid"], VmState.STOPPED, "test: stopped behind the controller's back")
    for _ in range(200):  # the report is sent at once; 20 s bounds a loaded machine
        if (await env.vm(vm["uuid"]))["state"] == "Stopped":
            break
        await asyncio.sleep(0.1)
    assert (await env.vm(vm["uuid"]))["state"] == "Stopped"


async def _get(url: str, *, tls: ssl.SSLContext | bool, headers: dict[str, str] | None = None,
               server_hostname: str | None = None) -> int:
    extra: dict[str, Any] = {"server_hostname": server_hostname} if server_hostname else {}
    async with aiohttp.ClientSession() as s, s.get(url, ssl=tls, headers=headers or {},
                                                   timeout=aiohttp.ClientTimeout(total=10), **extra) as r:
        return r.status


async def test_only_the_pinned_ca_reaches_an_agent(env: TlsEnv, tmp_path: Path) -> None:
    a = env.tls_agents[0]
    ca = env.core.services["tls"].ca
    pinned = client_context(ca_pem=ca.cert_pem)
    assert await _get(a.url + "/readyz", tls=pinned, headers=a.auth) == 200
    assert await _get(a.url + "/readyz", tls=pinned) == 401  # TLS does not replace the token
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the system's CAs: refused
        await _get(a.url + "/healthz", tls=True)
    wrong = pki.ensure_ca(tmp_path / "wrong-ca")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # another CA: refused
        await _get(a.url + "/healthz", tls=client_context(ca_pem=wrong.cert_pem))
    with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port gets no answer
        await _get(f"http://{a.ip}:7070/healthz", tls=False)


async def test_controller_refuses_an_agent_with_a_wrong_certificate(env: TlsEnv, tmp_path: Path) -> None:
    tls = env.core.services["tls"]
    # a certificate from the right CA but for another address (a host's certificate replayed elsewhere)
    stolen = await start_tls_agent(tmp_path / "stolen", "127.0.9.41", env.events_url, tls.ca, names=["127.0.9.99"])
    # a certificate from another CA for the right address
    other = await start_tls_agent(tmp_path / "other", "127.0.9.42", env.events_url,
                                  pki.ensure_ca(tmp_path / "other-ca"))
    env.tls_agents += [stolen, other]
    for a in (stolen, other):
        with pytest.raises(AgentUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await add_connected_host(env.core, name="bad", cluster_uuid=env.ids["cluster"], ip=a.ip, port=7070,
                                     token=a.config.token, controller_url=env.events_url,
                                     uuid=a.config.host_uuid, tls=True)
        assert await env.core.db.fetchone("SELECT 1 FROM Host WHERE uuid=?", (a.config.host_uuid,)) is None


async def test_events_go_only_to_the_real_controller(env: TlsEnv, tmp_path: Path) -> None:
    tls = env.core.services["tls"]
    a = env.tls_agents[0]
    pinned = client_context(ca_pem=tls.ca.cert_pem)
    port = int(env.events_url.rsplit(":", 1)[1])
    # the events listener answers with the controller's name and still wants the host token
    assert await _get(f"https://127.0.0.1:{port}/healthz", tls=pinned, server_hostname=CONTROLLER_NAME) == 200
    async with aiohttp.ClientSession() as s, s.post(f"https://127.0.0.1:{port}/v1/agent/events", json={},
                                                    ssl=pinned, server_hostname=CONTROLLER_NAME) as r:
        assert r.status == 401
    # only that path is served there (the API is not)
    async with aiohttp.ClientSession() as s, s.post(f"https://127.0.0.1:{port}/v1/QueryZone", json={},
                                                    ssl=pinned, server_hostname=CONTROLLER_NAME) as r:
        assert r.status == 404

    # A server holding a HOST's certificate (from the same CA) cannot pose as the controller: the agent checks
    # the controller's name, which no host certificate carries.
    seen: list[str] = []

    async def sink(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({})

    impostor = web.Application()
    impostor.router.add_post("/v1/agent/events", sink)
    runner = web.AppRunner(impostor)
    await runner.setup()
    cert, key, _ = write_tls(tls.ca, tmp_path / "impostor", ["127.0.0.1"])
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context(cert, key))
    await site.start()
    try:
        fake = f"https://127.0.0.1:{runner.addresses[0][1]}"
        reporter = EventReporter(a.config.host_uuid, fake, a.config.token, metrics=Metrics(), tls=pinned)
        await reporter.start()
        try:
            body = {"hostUuid": a.config.host_uuid, "kind": "reconnectMe", "reason": "test"}
            assert await reporter._post(body) is False  # refused at the handshake, kept for retry
            reporter.controller_url = env.events_url
            assert await reporter._post(body) is True  # the real controller takes it
        finally:
            await reporter.stop()
    finally:
        await runner.cleanup()
    assert seen == []
