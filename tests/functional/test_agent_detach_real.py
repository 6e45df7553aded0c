"""A live disk detach the guest never completes is not reported as done (issue 18, reliability 4).

The guest is QEMU (TCG) running only its firmware: no OS answers the ACPI hot-unplug request, exactly like a
guest that is still booting. The agent must retry the unplug, wait for libvirt's DEVICE_REMOVED, and then
fail clearly (``VM.DETACH_TIMEOUT``, naming volume and VM) with the disk still in the domain.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "contract"))

from agent_env import make_disk
from agent_harness import running_agent, start_body

from kvmagent.driver import devices
from zsutil.runner import run


async def _domblklist(vm: str) -> str:
    return (await run(["virsh", "-c", "qemu:///system", "domblklist", vm], timeout=30)).stdout


async def test_detach_a_guest_ignores_fails_clearly_and_keeps_the_disk(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # production waits longer; this guest never answers anyway
    monkeypatch.setattr(devices, "DETACH_WAITS", (1.0, 2.0), raising=False)
    async with running_agent(tmp_path, uri="qemu:///system") as agent:
        vm = uuid.uuid4().hex
        vol_uuid = uuid.uuid4().hex
        root = await make_disk(tmp_path / "root.qcow2")
        data = await make_disk(tmp_path / "data.qcow2")
        try:
            assert (await agent.call("/vm/start", start_body(vm, str(root))))[0] == 200
            vol = {"path": str(data), "uuid": vol_uuid, "deviceId": 1}
            assert (await agent.call("/vm/volume/attach", {"uuid": vm, "volume": vol}))[0] == 200
            assert str(data) in await _domblklist(vm)
            t0 = time.monotonic()
            status, reply = await agent.call("/vm/volume/detach", {"uuid": vm, "volumeUuid": vol_uuid})
            print(f"\ndetach answered {status} after {time.monotonic() - t0:.1f} s: {reply}")
            assert str(data) in await _domblklist(vm)  # the guest never released it ...
            assert status == 409, reply  # ... so the detach is not reported as done
            err = reply["error"] if "error" in reply else reply
            assert err["code"] == "VM.DETACH_TIMEOUT" and vol_uuid in err["message"] and vm in err["message"]
        finally:
            await agent.call("/vm/destroy", {"uuid": vm})


async def test_detach_of_a_stopped_domain_is_immediate(tmp_path: Path) -> None:
    async with running_agent(tmp_path, uri="qemu:///system") as agent:
        vm = uuid.uuid4().hex
        vol_uuid = uuid.uuid4().hex
        root = await make_disk(tmp_path / "root.qcow2")
        data = await make_disk(tmp_path / "data.qcow2")
        try:
            assert (await agent.call("/vm/start", start_body(vm, str(root))))[0] == 200
            vol = {"path": str(data), "uuid": vol_uuid, "deviceId": 1}
            assert (await agent.call("/vm/volume/attach", {"uuid": vm, "volume": vol}))[0] == 200
            await run(["virsh", "-c", "qemu:///system", "destroy", vm], timeout=30)
            status, reply = await agent.call("/vm/volume/detach", {"uuid": vm, "volumeUuid": vol_uuid})
            assert status == 200, reply
            xml = (await run(["virsh", "-c", "qemu:///system", "dumpxml", "--inactive", vm], timeout=30)).stdout
            assert str(data) not in xml
        finally:
            await agent.call("/vm/destroy", {"uuid": vm})


async def test_detach_from_a_booted_tiny_guest_completes(tmp_path: Path) -> None:
    """The other side: a guest OS that handles ACPI hot-unplug (the tiny image's kernel, once booted) releases
    the disk; the detach returns only after libvirt removed it from the running domain."""
    tiny = Path(os.environ.get("ZSTACK_TINY_DIR", "/work/main/build/tiny")) / "tiny.qcow2"
    if not tiny.exists():
        pytest.fail(f"the tiny image {tiny} is missing (scripts/build-tiny-image)")
    async with running_agent(tmp_path, uri="qemu:///system") as agent:
        vm = uuid.uuid4().hex
        vol_uuid = uuid.uuid4().hex
        root = tmp_path / "root.qcow2"
        await run(["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", str(tiny), str(root)], timeout=30)
        data = await make_disk(tmp_path / "data.qcow2")
        try:
            assert (await agent.call("/vm/start", start_body(vm, str(root), memory=256 << 20)))[0] == 200
            console = agent.ctx.driver.console_log(vm)
            deadline = time.monotonic() + 120
            while "tiny: drivers ready" not in (console.read_text(errors="replace") if console.exists() else ""):
                assert time.monotonic() < deadline, console.read_text(errors="replace")[-2000:]
                await asyncio.sleep(0.5)
            vol = {"path": str(data), "uuid": vol_uuid, "deviceId": 1}
            assert (await agent.call("/vm/volume/attach", {"uuid": vm, "volume": vol}))[0] == 200
            await asyncio.sleep(2)  # the guest sees the new device
            t0 = time.monotonic()
            status, reply = await agent.call("/vm/volume/detach", {"uuid": vm, "volumeUuid": vol_uuid})
            print(f"\ndetach from a booted tiny guest: {status} after {time.monotonic() - t0:.1f} s")
            assert status == 200, reply
            assert str(data) not in await _domblklist(vm)
        finally:
            await agent.call("/vm/destroy", {"uuid": vm})
