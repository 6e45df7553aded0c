"""Crash recovery (issue 18, reliability 1) and CheckConsistency, against real in-process agents.

The controller that gets killed is a real ``python -m controller.server`` process (SIGKILL), on the
database an in-process controller prepared (records, two hosts on in-process agents). Six creates are in
flight when it dies: three had reached their host's ``/vm/start`` (the agent finishes them: the domain
comes up with nobody to hear it), three were still downloading the image (no domain will ever exist).
A new controller on the same database and port must, by itself: finish the first three (Running), roll
the other three back entirely (rows, IPs, host capacity, local-storage capacity), and then
``CheckConsistency`` reports nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_controller_compute import Env, SimAgent, _capacity_exact, _domains, _records, start_agent

from controller.app import create_app
from controller.compute.hosts import add_connected_host
from controller.config import ControllerConfig
from controller.passwords import hash_password
from controller.util import new_uuid
from kvmagent.server import CTX

REPO = Path(__file__).resolve().parents[2]
TRANSITIONAL = ("Created", "Starting", "Stopping", "Rebooting", "Migrating", "Destroying")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gate:
    """Holds a coroutine method of an object until opened (a slow host), counting who waits."""

    def __init__(self, obj: Any, name: str) -> None:
        self.opened = asyncio.Event()
        self.waiting: list[Any] = []
        orig: Callable[..., Awaitable[Any]] = getattr(obj, name)

        async def held(*a: Any, **kw: Any) -> Any:
            self.waiting.append(a[0] if a else None)
            await self.opened.wait()
            return await orig(*a, **kw)

        setattr(obj, name, held)


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[tuple[Env, list[SimAgent], ControllerConfig]]:
    """Records + two connected hosts in a database, prepared by an in-process controller that is then
    closed; the agents keep running and report to ``cfg.port``."""
    port = _free_port()
    cfg = ControllerConfig(db_path=str(tmp_path / "c.db"), log_dir=str(tmp_path / "log"), listen_host="127.0.0.1",
                           port=port, public_url=f"http://127.0.0.1:{port}", allow_host_local_images=True,
                           image_import_dirs=[str(tmp_path)])
    agents: list[SimAgent] = []
    try:
        server = TestServer(create_app(cfg), host="127.0.0.1", port=port)
        async with TestClient(server) as client:
            env = Env(client, cfg.public_url or "")
            await env.login()
            await _records(env, tmp_path)
            for i in range(2):
                a = await start_agent(tmp_path / "agents", f"127.0.9.{21 + i}", env.url)
                agents.append(a)
                await add_connected_host(env.core, name=f"h{i}", cluster_uuid=env.ids["cluster"], ip=a.ip,
                                         port=7070, token=a.config.token, controller_url=env.url,
                                         uuid=a.config.host_uuid)
            ids = dict(env.ids)
        env.ids = ids
        yield env, agents, cfg
    finally:
        for a in agents:
            await a.runner.cleanup()


async def _wait(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not await pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_controller_sigkill_during_creates_recovers(lab: tuple[Env, list[SimAgent], ControllerConfig],
                                                          tmp_path: Path) -> None:
    env, agents, cfg = lab
    cfg_file = tmp_path / "controller.json"
    cfg_file.write_text(json.dumps(cfg.model_dump()))
    # agent 0: downloads go through, starts are held (they finish after the controller died);
    # agent 1: downloads are held (the controller dies before any /vm/start reaches it)
    starts = Gate(agents[0].app[CTX].driver, "start_vm")
    downloads = Gate(agents[1].app[CTX].storage, "download_image")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.server", "--config", str(cfg_file), cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{cfg.port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(url + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            async with http.post(url + "/v1/LogInByAccount", json={"accountName": "admin",
                                                                   "password": "password"}) as r:
                session = (await r.json())["inventory"]["uuid"]
            hosts = [a.config.host_uuid for a in agents]
            for i in range(6):
                body = {"name": f"crash{i}", "instanceOfferingUuid": env.ids["offering"],
                        "imageUuid": env.ids["image"], "l3NetworkUuids": [env.ids["l3"]], "hostUuid": hosts[i % 2]}
                async with http.post(url + "/v1/CreateVmInstance?async=true", json=body,
                                     headers={"Authorization": f"OAuth {session}"}) as r:
                    assert r.status == 202, await r.text()

            async def all_in_flight() -> bool:
                return len(starts.waiting) == 3 and len(downloads.waiting) == 3

            await _wait(all_in_flight, 60, "3 starts held on host 0 and 3 downloads held on host 1")
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    starts.opened.set()      # the agents finish what they were doing, with no controller to hear it
    downloads.opened.set()
    await _wait(lambda: _n_domains(agents[0], 3), 30, "the 3 held starts to bring their domains up")

    server = TestServer(create_app(cfg), host="127.0.0.1", port=cfg.port)
    async with TestClient(server) as client:
        env2 = Env(client, url)
        env2.ids = env.ids
        await env2.login()
        t0 = time.monotonic()

        async def settled() -> bool:
            row = await env2.core.db.fetchone(
                f"SELECT COUNT(*) FROM VmInstance WHERE state IN ({','.join('?' * len(TRANSITIONAL))})",
                TRANSITIONAL)
            return int(row[0]) == 0

        await _wait(settled, 30, "no VM left in a transitional state after the restart")
        print(f"controller restart → no VM in a transitional state in {time.monotonic() - t0:.2f} s")
        vms = (await env2.call("QueryVmInstance", conditions=[]))["inventories"]
        assert sorted((v["hostUuid"], v["state"]) for v in vms) == [(hosts[0], "Running")] * 3, vms
        assert set(await _domains(agents[0])) == {v["uuid"] for v in vms}
        assert await _domains(agents[1]) == {}
        await _capacity_exact(env2)
        db = env2.core.db
        assert (await db.fetchone("SELECT COUNT(*) FROM UsedIp WHERE usedFor='VmNic'"))[0] == 3
        assert (await db.fetchone("SELECT COUNT(*) FROM Volume"))[0] == 3
        refs = await db.fetchall("SELECT h.hostUuid, h.totalCapacity - h.availableCapacity AS used, "
                                 "(SELECT COALESCE(SUM(size), 0) FROM LocalStorageResourceRef r WHERE r.hostUuid = "
                                 "h.hostUuid) AS held FROM LocalStorageHostRef h")
        assert all(r["used"] == r["held"] for r in refs), [dict(r) for r in refs]
        status, body = await env2.raw("CheckConsistency")
        assert status == 200 and body["findings"] == [] and body["consistent"], body
        ctl = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.ctl", "--config", str(cfg_file), "check", cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE)
        out, _ = await ctl.communicate()
        assert ctl.returncode == 0 and b"consistent" in out, out
        # and the rolled-back capacity is really free: the 3 creates go through now
        for i in range(3):
            st, b = await env2.create_vm(f"again{i}", hostUuid=hosts[1])
            assert st == 200, b


async def _n_domains(agent: SimAgent, n: int) -> bool:
    doms = await _domains(agent)
    return sum(1 for s in doms.values() if str(s) in ("Running", "VmState.RUNNING")) == n


async def test_check_consistency_finds_and_repairs(env: Env) -> None:
    """Each kind of difference the check knows, made by hand, is reported; --repair fixes the safe ones."""
    db = env.core.db
    _, body = await env.create_vm("a")
    vm = body["inventory"]
    _, body = await env.create_vm("b")
    other = body["inventory"]
    assert (await env.call("CheckConsistency"))["findings"] == []
    host = next(a for a in env.agents if a.config.host_uuid == vm["hostUuid"])
    async with db.write() as tx:  # a leaked IP, wrong host capacity, a stuck Stopping VM
        # a fresh uuid: 'f' || substr(uuid, 2) collided 1 time in 16 with a uuid that starts with 'f'
        await tx.execute("INSERT INTO UsedIp (uuid, ipRangeUuid, l3NetworkUuid, ip, ipInLong, usedFor, createDate, "
                         "lastOpDate) SELECT ?, ipRangeUuid, l3NetworkUuid, '10.10.3.250', "
                         "168428538, 'VmNic', createDate, lastOpDate FROM UsedIp LIMIT 1", (new_uuid(),))
        await tx.execute("UPDATE Host SET availableCpuCapacity = availableCpuCapacity - 7 WHERE uuid=?",
                         (vm["hostUuid"],))
        await tx.execute("UPDATE VmInstance SET state='Stopping' WHERE uuid=?", (other["uuid"],))
    guest = await host.app[CTX].driver.host.lookup(vm["uuid"])
    async with db.write() as tx:  # the domain loses its row: an orphan
        await tx.execute("UPDATE VmInstance SET state='Destroyed' WHERE uuid=?", (vm["uuid"],))
    assert guest is not None
    body = await env.call("CheckConsistency")
    kinds = sorted(f["kind"] for f in body["findings"])
    assert kinds == ["hostCapacity", "leakedIp", "orphanDomain", "stuckTransition"], body["findings"]
    assert all(f["action"] for f in body["findings"])
    body = await env.call("CheckConsistency", repair=True)
    repaired = {f["kind"]: f["repaired"] for f in body["findings"]}
    assert repaired == {"hostCapacity": True, "leakedIp": True, "orphanDomain": False, "stuckTransition": True}
    left = sorted(f["kind"] for f in (await env.call("CheckConsistency"))["findings"])
    assert left == ["orphanDomain"]
    ctl = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.ctl", "check", "--url", env.url, cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO), "ZSTACK_ADMIN_PASSWORD": "password"},
        stdout=asyncio.subprocess.PIPE)
    out, _ = await ctl.communicate()
    assert ctl.returncode == 1 and f"orphanDomain: domain[uuid:{vm['uuid']}]".encode() in out, out
    assert b"what to do: destroy it" in out, out
    assert (await env.vm(other["uuid"]))["state"] == "Running"
    await env.call("UpdateGlobalConfig", category="vm", name="orphanDomain.destroy", value="true")
    await env.call("ReconnectHost", uuid=vm["hostUuid"])
    assert vm["uuid"] not in await _domains(host)
    assert (await env.call("CheckConsistency"))["findings"] == []


async def test_check_consistency_is_admin_only(env: Env) -> None:
    # no account API yet: the row a normal account has (the passwords module's own hash)
    async with env.core.db.write() as tx:
        await tx.insert("Account", {"uuid": "a" * 32, "name": "tenant", "type": "Normal",
                                    "passwordHash": hash_password("pw-tenant-1"), "createDate": "2026-01-01",
                                    "lastOpDate": "2026-01-01"})
    status, body = await env.raw("LogInByAccount", session=False, accountName="tenant", password="pw-tenant-1")
    assert status == 200, body
    env.session = body["inventory"]["uuid"]
    status, body = await env.raw("CheckConsistency")
    assert status == 403 and body["error"]["code"] == "ID.1002", body
