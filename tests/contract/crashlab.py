"""A controller killed at an exact point of an operation, then a fresh controller on the same database.

:class:`CrashLab` runs controller A in-process on a fixed port with two real in-process agents (libvirt test
driver, real StorageService/qemu-img) and the contract tier's records. :meth:`CrashLab.crash_after` /
:meth:`CrashLab.crash_before` wrap one coroutine function: the first time A runs it, the process "dies" right
after (before) it, as SIGKILL would leave it: from that moment nothing A does reaches the database or a host
(every write transaction and every agent call of A raises :class:`Dead`, so no rollback, ``finally`` or
background task of A changes anything; what A committed before stays). The operation itself gets
:class:`Killed`, a BaseException no handler of the controller swallows. The agents keep running, as real
hosts do. :meth:`CrashLab.restart` closes A and starts controller B on the same database and port (the
agents report to it); :meth:`CrashLab.healed` then checks, after B's own recovery and one ReconnectHost of
every host, that nothing is left half done."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_controller_compute import Env, SimAgent, _capacity_exact, _domains, _records, start_agent

from controller.app import create_app
from controller.compute.hosts import add_connected_host
from controller.config import ControllerConfig

TRANSITIONAL = ("Created", "Starting", "Stopping", "Rebooting", "Migrating", "Destroying")


class Killed(BaseException):
    """Raised at the crash point: the operation ends there (no handler of the controller swallows it)."""


class Dead(Exception):
    """What every database write and agent call of the killed controller raises: nothing it does from then on
    (rollbacks, ``finally`` blocks, background tasks, agent reports it receives) changes anything."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {what}")
        await asyncio.sleep(0.05)


class CrashLab:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.monkeypatch = monkeypatch
        port = _free_port()
        tiny = str(Path(__file__).resolve().parents[2] / "build" / "tiny")
        self.cfg = ControllerConfig(db_path=str(tmp / "c.db"), log_dir=str(tmp / "log"), listen_host="127.0.0.1",
                                    port=port, public_url=f"http://127.0.0.1:{port}", allow_host_local_images=True,
                                    image_import_dirs=[str(tmp), tiny])
        self.url = f"http://127.0.0.1:{port}"
        self.agents: list[SimAgent] = []
        self.client: TestClient | None = None
        self.env: Env = None  # type: ignore[assignment]
        self.ids: dict[str, str] = {}
        self.dead = asyncio.Event()
        self.generation = 0  # 0: controller A (the one that dies), 1: controller B

    # ------------------------------------------------------------------ controllers
    async def _start(self) -> Env:
        server = TestServer(create_app(self.cfg), host="127.0.0.1", port=self.cfg.port)
        self.client = TestClient(server)
        await self.client.start_server()
        env = Env(self.client, self.url)
        await env.login()
        env.agents = self.agents
        env.ids = self.ids
        self.env = env
        return env

    async def start(self) -> Env:
        env = await self._start()
        await _records(env, self.tmp)
        self.ids.update(env.ids)
        env.ids = self.ids
        for i in range(2):
            a = await start_agent(self.tmp / "agents", f"127.0.9.{31 + i}", self.url)
            self.agents.append(a)
            await add_connected_host(env.core, name=f"h{i}", cluster_uuid=self.ids["cluster"], ip=a.ip, port=7070,
                                     token=a.config.token, controller_url=self.url, uuid=a.config.host_uuid)
        return env

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        for a in self.agents:
            await a.runner.cleanup()

    def die(self) -> None:
        """Controller A stops here: its database writes and agent calls fail from now on."""
        core = self.env.core
        if self.generation != 0 or self.dead.is_set():
            return

        def no_write() -> Any:
            raise Dead("the controller was killed")

        async def no_call(*_a: Any, **_kw: Any) -> Any:
            raise Dead("the controller was killed")

        core.db.write = no_write
        core.services["agents"].call = no_call
        self.dead.set()

    def _hook(self, obj: Any, name: str, *, after: bool, when: Callable[..., bool] | None) -> None:
        orig = getattr(obj, name)
        lab = self

        async def wrapped(*a: Any, **kw: Any) -> Any:
            hit = lab.generation == 0 and not lab.dead.is_set() and (when is None or when(*a, **kw))
            if hit and not after:
                lab.die()
                raise Killed(f"killed before {name}")
            out = await orig(*a, **kw)
            if hit:
                lab.die()
                raise Killed(f"killed after {name}")
            return out

        self.monkeypatch.setattr(obj, name, wrapped)

    def crash_after(self, obj: Any, name: str, when: Callable[..., bool] | None = None) -> None:
        """Kill controller A right after ``obj.name`` (a coroutine function) returns, the first time ``when``
        (given the call's arguments) holds."""
        self._hook(obj, name, after=True, when=when)

    def crash_before(self, obj: Any, name: str, when: Callable[..., bool] | None = None) -> None:
        self._hook(obj, name, after=False, when=when)

    async def submit(self, api: str, **params: Any) -> str:
        """Call ``api`` on controller A as a job (the crash ends it half-way); the job's uuid."""
        assert self.client is not None
        r = await self.client.post(f"/v1/{api}?async=true", json=params,
                                   headers={"Authorization": f"OAuth {self.env.session}"})
        assert r.status == 202, await r.text()
        return str((await r.json())["jobUuid"])

    async def restart(self, timeout: float = 60) -> Env:
        """Wait for the crash, close controller A, start controller B on the same database and port."""
        await asyncio.wait_for(self.dead.wait(), timeout)
        assert self.client is not None
        await self.client.close()
        self.generation = 1
        env = await self._start()
        await wait_for(self._recovered, 30, "the restarted controller's crash recovery to finish")
        return env

    async def _recovered(self) -> bool:
        return bool(self.env.core.services["recovery"]["done"])

    # ------------------------------------------------------------------ checks
    async def reconnect_all(self) -> None:
        """ReconnectHost of every host (one in Maintenance refuses it: not reconnected)."""
        for h in await self.env.core.db.fetchall("SELECT uuid FROM Host WHERE state != 'Maintenance' ORDER BY "
                                                 "createDate"):
            await self.env.call("ReconnectHost", uuid=h["uuid"])

    async def healed(self) -> None:
        """After one reconnect of every host: no VM, host or job in a transitional state; every domain the
        agents run is a Running VM of that host and every Running VM has its domain; host and local-storage
        capacity derived from their holders; CheckConsistency finds nothing."""
        env = self.env
        db = env.core.db
        await self.reconnect_all()

        async def settled() -> bool:
            row = await db.fetchone(f"SELECT COUNT(*) FROM VmInstance WHERE state IN "
                                    f"({','.join('?' * len(TRANSITIONAL))})", TRANSITIONAL)
            return int(row[0]) == 0

        await wait_for(settled, 30, "no VM left in a transitional state")
        hosts = [dict(r) for r in await db.fetchall("SELECT uuid, status, state FROM Host")]
        assert all(h["status"] == "Connected" and h["state"] in ("Enabled", "Disabled", "Maintenance")
                   for h in hosts), hosts
        jobs = await db.fetchall("SELECT apiName, state FROM Job WHERE state='Processing'")
        assert not jobs, [dict(j) for j in jobs]
        running: dict[str, str] = {}
        for a in self.agents:
            for uuid, st in (await _domains(a)).items():
                assert str(st) == "Running", (a.config.host_uuid, uuid, st)
                assert uuid not in running, f"vm {uuid} runs on two hosts"
                running[uuid] = a.config.host_uuid
        rows = {r["uuid"]: dict(r) for r in await db.fetchall(
            "SELECT uuid, state, hostUuid FROM VmInstance WHERE hostUuid IS NOT NULL OR state='Running'")}
        assert {u: (r["state"], r["hostUuid"]) for u, r in rows.items()} == {
            u: ("Running", h) for u, h in running.items()}, (rows, running)
        await _capacity_exact(env)
        refs = await db.fetchall("SELECT h.hostUuid, h.totalCapacity - h.availableCapacity AS used, "
                                 "(SELECT COALESCE(SUM(size), 0) FROM LocalStorageResourceRef r WHERE r.hostUuid = "
                                 "h.hostUuid) AS held FROM LocalStorageHostRef h")
        assert all(r["used"] == r["held"] for r in refs), [dict(r) for r in refs]
        body = await env.call("CheckConsistency")
        assert body["findings"] == [] and body["consistent"], body
