"""Shared helpers for the agent's contract tests: a driver per backend, VM specs, disks, polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from kvmagent.driver.base import DomainEvent
from kvmagent.driver.libvirt_driver import LibvirtDriver
from kvmagent.driver.spec import DiskSpec, VmSpec
from kvmagent.driver.testnode import write_node_xml
from zsutil.runner import run

BACKENDS = ["test", "qemu"]


async def make_disk(path: Path, size: str = "16M") -> Path:
    await run(["qemu-img", "create", "-f", "qcow2", str(path), size], timeout=30)
    return path


@dataclass
class Env:
    backend: str
    driver: LibvirtDriver
    tmp: Path
    events: list[DomainEvent] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    async def spec(self, **kw: Any) -> VmSpec:
        """A small VM spec with its own fresh root disk (QEMU locks images: one disk per VM)."""
        vm_uuid = uuid.uuid4().hex
        self.created.append(vm_uuid)
        disk = await make_disk(self.tmp / f"{vm_uuid}.qcow2")
        base = VmSpec(uuid=vm_uuid, internal_id=len(self.created), name=f"contract-{vm_uuid[:6]}",
                      cpu_num=1, cpu_speed=1000, memory_bytes=64 << 20, management_ip="127.0.0.1",
                      root_disk=DiskSpec(str(disk), uuid.uuid4().hex, 0))
        return replace(base, **kw)

    async def cleanup(self) -> None:
        for vm_uuid in self.created:
            try:
                await self.driver.destroy_vm(vm_uuid)
            except Exception:
                pass
        await self.driver.close()


async def open_env(backend: str, tmp: Path) -> Env:
    """A connected driver on ``backend``. The real backend must be reachable: failing to connect fails."""
    uri = "qemu:///system" if backend == "qemu" else write_node_xml(tmp / "node.xml")
    driver = LibvirtDriver(uri, state_dir=tmp / "state", poll_interval=0.05)
    env = Env(backend, driver, tmp)
    driver.subscribe(env.events.append)
    await driver.open()
    return env


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    """One driver environment per backend (the test driver, then the root libvirtd), cleaned up after."""
    e = await open_env(request.param, tmp_path)
    try:
        yield e
    finally:
        await e.cleanup()


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> float:
    """Poll ``pred`` (sync or async) until truthy; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        res = pred()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
