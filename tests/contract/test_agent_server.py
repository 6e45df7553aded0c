"""The agent HTTP server over libvirt's test driver: auth, validation, errors, dedup, readiness, metrics
and every host/VM endpoint."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_harness import Agent, running_agent, start_body

from kvmagent.routing import ENDPOINTS


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with running_agent(tmp_path) as a:
        yield a


async def _get(agent: Agent, path: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with agent.session.get(agent.server.make_url(path), headers=headers) as r:
        return r.status, await r.text()


async def test_auth_everywhere_but_healthz(agent: Agent) -> None:
    assert (await _get(agent, "/healthz", None))[0] == 200
    assert (await _get(agent, "/readyz", None))[0] == 401
    assert (await _get(agent, "/metrics", "wrong"))[0] == 401
    assert (await _get(agent, "/readyz", agent.config.token))[0] == 200
    status, body = await agent.call("/host/facts", token="wrong")
    assert status == 401 and body["error"]["code"] == "AGENT.UNAUTHORIZED"


async def test_bad_input_names_the_field(agent: Agent) -> None:
    body = start_body(uuid.uuid4().hex, "/x.qcow2", cpuNum=0, cpuMode="turbo")
    status, reply = await agent.call("/vm/start", body)
    assert status == 400 and reply["error"]["code"] == "AGENT.INVALID_REQUEST"
    fields = {e["field"] for e in reply["error"]["details"]["errors"]}
    assert fields == {"cpuNum", "cpuMode"} and "cpuNum" in reply["error"]["message"]
    status, reply = await agent.call("/vm/stop", {"uuid": "a" * 32, "bogus": 1})
    assert status == 400 and "bogus" in reply["error"]["message"]
    assert (await agent.call("/no/such/path"))[0] == 404


async def test_vm_lifecycle_endpoints(agent: Agent, tmp_path: Path) -> None:
    vm = uuid.uuid4().hex
    body = start_body(vm, str(tmp_path / "root.qcow2"), nics=[
        {"mac": "52:54:00:00:00:01", "bridgeName": "br_eth0", "deviceId": 0, "l3NetworkUuid": "b" * 32}])
    assert await agent.call("/vm/start", body) == (200, {"uuid": vm, "state": "Running"})
    assert (await agent.call("/vm/start", body))[0] == 200
    status, reply = await agent.call("/vm/start", {**body, "cpuNum": 2})
    assert status == 409 and reply["error"]["code"] == "VM.STATE_CONFLICT"
    assert (await agent.call("/vm/vmsync"))[1]["states"] == {vm: "Running"}
    ghost = uuid.uuid4().hex
    assert (await agent.call("/vm/checkstate", {"vmUuids": [vm, ghost]}))[1]["states"] == {
        vm: "Running", ghost: "Stopped"}
    status, reply = await agent.call("/vm/console", {"uuid": ghost})
    assert status == 404 and reply["error"]["code"] == "VM.NOT_FOUND"
    assert (await agent.call("/vm/reboot", {"uuid": vm, "bootDev": ["cdrom", "hd"], "timeout": 1}))[0] == 200
    iso = {"path": str(tmp_path / "a.iso"), "imageUuid": "c" * 32}
    assert (await agent.call("/vm/iso/attach", {"uuid": vm, "iso": iso}))[0] == 200
    assert (await agent.call("/vm/iso/detach", {"uuid": vm}))[0] == 200
    vol = {"path": str(tmp_path / "d.qcow2"), "uuid": "d" * 32, "deviceId": 1}
    assert (await agent.call("/vm/volume/attach", {"uuid": vm, "volume": vol}))[0] == 200
    assert (await agent.call("/vm/volume/detach", {"uuid": vm, "volumeUuid": "d" * 32}))[0] == 200
    assert await agent.call("/vm/stop", {"uuid": vm, "timeout": 1}) == (200, {"uuid": vm, "state": "Stopped"})
    assert (await agent.call("/vm/vmsync"))[1]["states"] == {}
    assert (await agent.call("/vm/stop", {"uuid": vm}))[0] == 200
    assert (await agent.call("/vm/destroy", {"uuid": vm}))[0] == 200


async def test_host_passthrough_is_refused_with_reason(agent: Agent, tmp_path: Path) -> None:
    vm = uuid.uuid4().hex
    status, reply = await agent.call("/vm/start", start_body(vm, str(tmp_path / "r"), cpuMode="host-passthrough"))
    assert status == 400 and "host-passthrough needs KVM; this host runs TCG" in reply["error"]["message"]
    assert (await agent.call("/vm/vmsync"))[1]["states"] == {}


async def test_host_endpoints(agent: Agent) -> None:
    status, ping = await agent.call("/host/ping")
    assert status == 200 and ping["hostUuid"] == agent.config.host_uuid and ping["ready"] and ping["bootId"]
    status, reply = await agent.call("/host/connect", {"hostUuid": agent.config.host_uuid,
                                                       "controllerUrl": "http://127.0.0.1:1/"})
    assert status == 200 and reply["domainType"] == "qemu" and reply["bootId"] == ping["bootId"]
    assert agent.ctx.events.controller_url == "http://127.0.0.1:1"
    status, reply = await agent.call("/host/connect", {"hostUuid": "f" * 32, "controllerUrl": "http://x"})
    assert status == 409 and reply["error"]["code"] == "HOST.UUID_MISMATCH"
    cap = (await agent.call("/host/capacity"))[1]
    assert cap["cpuNum"] == 8 and cap["usedCpu"] == 0 and cap["totalMemory"] == 16 << 30
    assert (await agent.call("/host/checkbridge", {"bridgeName": "br_eth0"}))[0] == 200
    status, reply = await agent.call("/host/checkbridge", {"bridgeName": "br_nope"})
    assert status == 404 and reply["error"]["code"] == "NET.BRIDGE_NOT_FOUND"


async def test_request_id_dedup_runs_once_even_in_flight(agent: Agent, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_start = agent.ctx.vms.start

    async def slow_start(spec):  # type: ignore[no-untyped-def]
        calls.append(spec.uuid)
        await asyncio.sleep(0.2)
        await real_start(spec)

    monkeypatch.setattr(agent.ctx.vms, "start", slow_start)
    vm = uuid.uuid4().hex
    body = start_body(vm, str(tmp_path / "r"))
    first, second = await asyncio.gather(agent.call("/vm/start", body, request_id="req-1"),
                                         agent.call("/vm/start", body, request_id="req-1"))
    assert first == second == (200, {"uuid": vm, "state": "Running"})
    assert (await agent.call("/vm/start", {**body, "cpuNum": 2}, request_id="req-1"))[0] == 200
    assert calls == [vm]


async def test_unexpected_error_is_500_with_body(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(agent.ctx.driver, "capacity", broken)
    status, reply = await agent.call("/host/capacity")
    assert status == 500 and reply["error"]["code"] == "AGENT.INTERNAL"


async def test_not_ready_answers_503(agent: Agent) -> None:
    agent.ctx.mark_not_ready("libvirt connection closed: test")
    status, reply = await agent.call("/vm/vmsync")
    assert status == 503 and "libvirt connection closed" in reply["error"]["message"]
    assert (await agent.call("/host/ping"))[0] == 200
    assert (await _get(agent, "/readyz", agent.config.token))[0] == 503


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def test_metrics(agent: Agent, tmp_path: Path) -> None:
    await agent.call("/vm/start", start_body(uuid.uuid4().hex, str(tmp_path / "r")))
    status, text = await _get(agent, "/metrics", agent.config.token)
    assert status == 200
    samples = _samples(text)
    assert samples[("zstack_agent_requests_total", (("path", "/vm/start"), ("status", "200")))] == 1
    assert samples[("zstack_agent_domains", (("state", "Running"),))] == 1
    assert "zstack_agent_request_seconds_bucket" in text


async def test_metrics_paths_are_bounded_and_escaped(agent: Agent) -> None:
    for i in range(30):
        await _get(agent, f"/nothing/{i}", agent.config.token)
    await _get(agent, '/vm/x%22%7D%201%0Afake_metric%201', agent.config.token)
    status, text = await _get(agent, "/metrics", agent.config.token)
    assert status == 200 and not any(line.startswith("fake_metric") for line in text.splitlines())
    paths = {dict(labels).get("path") for (_name, labels) in _samples(text)} - {None}
    routes = {r.resource.canonical for r in agent.app.router.routes() if r.resource is not None}
    assert "unknown" in paths and paths <= routes | {"unknown"}, paths - routes


def test_every_vm_and_host_path_is_registered() -> None:
    import kvmagent.handlers.host
    import kvmagent.handlers.vm  # noqa: F401

    wanted = {"/host/connect", "/host/ping", "/host/facts", "/host/capacity", "/host/checkbridge",
              "/vm/start", "/vm/stop", "/vm/reboot", "/vm/destroy", "/vm/vmsync", "/vm/checkstate",
              "/vm/console", "/vm/iso/attach", "/vm/iso/detach", "/vm/volume/attach", "/vm/volume/detach"}
    assert wanted <= set(ENDPOINTS)
