"""Event reports on the real backend (root libvirtd, TCG guests that only run SeaBIOS).

* ``virsh destroy`` out of band → one Stopped report; the agent's own stop → none.
* ``virsh suspend`` / ``virsh resume`` → Paused, Running, at once.
* ``virsh reset`` of a VM first booted from CD → libvirt's REBOOT event → the agent restarts it from hd
  (CD-then-disk), swallowing its own events.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "contract"))

from agent_env import make_disk, wait_for
from agent_harness import fake_controller, running_agent, start_body

from kvmagent.driver.xml.edit import boot_devs, parse
from zsutil.runner import run


async def _virsh(*args: str) -> str:
    return (await run(["virsh", "-c", "qemu:///system", *args], timeout=60)).stdout


async def test_out_of_band_destroy_is_reported_own_stop_is_not(tmp_path: Path) -> None:
    async with fake_controller() as (fc, url), \
            running_agent(tmp_path, controller_url=url, uri="qemu:///system") as agent:
        vm, vm2 = uuid.uuid4().hex, uuid.uuid4().hex
        try:
            for v in (vm, vm2):
                disk = await make_disk(tmp_path / f"{v}.qcow2")
                status, reply = await agent.call("/vm/start", start_body(v, str(disk)))
                assert status == 200, reply
            assert (await agent.call("/vm/stop", {"uuid": vm2, "timeout": 0.5}))[0] == 200
            await asyncio.sleep(3.0)  # QEMU under TCG takes ~1.8 s to exit: its events must be swallowed
            assert fc.reports == []
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await _virsh("destroy", vm)
            t1 = loop.time()
            await wait_for(lambda: fc.reports, timeout=5.0, what="Stopped report")
            assert [(r["vmUuid"], r["vmState"], r["reason"]) for r in fc.reports] == [(vm, "Stopped", "destroyed")]
            print(f"\nvirsh destroy started → report at the controller: {fc.times[0] - t0:.3f} s; "
                  f"virsh returned → report: {fc.times[0] - t1:+.3f} s")
        finally:
            await agent.call("/vm/destroy", {"uuid": vm})
            await agent.call("/vm/destroy", {"uuid": vm2})


async def test_virsh_suspend_and_resume_are_reported_at_once(tmp_path: Path) -> None:
    """``virsh suspend`` / ``virsh resume`` right after the agent's own start: Paused, then Running, each
    reported within a second (a resume was once swallowed as the start's expected Running)."""
    async with fake_controller() as (fc, url), \
            running_agent(tmp_path, controller_url=url, uri="qemu:///system") as agent:
        vm = uuid.uuid4().hex
        try:
            disk = await make_disk(tmp_path / f"{vm}.qcow2")
            assert (await agent.call("/vm/start", start_body(vm, str(disk))))[0] == 200
            await _virsh("suspend", vm)
            await wait_for(lambda: fc.reports, timeout=1.0, what="Paused report")
            t0 = time.monotonic()
            await _virsh("resume", vm)
            await wait_for(lambda: len(fc.reports) >= 2, timeout=1.0, what="Running report")
            print(f"\nvirsh resume started → Running report within {time.monotonic() - t0:.3f} s")
            assert [(r["vmState"], r["reason"]) for r in fc.reports] == [("Paused", "suspended"),
                                                                          ("Running", "resumed")]
        finally:
            await agent.call("/vm/destroy", {"uuid": vm})


async def test_cd_then_disk_on_real_guest_reset(tmp_path: Path) -> None:
    async with fake_controller() as (fc, url), \
            running_agent(tmp_path, controller_url=url, uri="qemu:///system") as agent:
        vm = uuid.uuid4().hex
        iso = tmp_path / "boot.iso"
        iso.write_bytes(b"\0" * 2048 * 32)
        disk = await make_disk(tmp_path / "root.qcow2")
        body = start_body(vm, str(disk), bootDev=["cdrom"], firstBootFromCd=True,
                          bootIso={"path": str(iso), "imageUuid": "e" * 32})
        try:
            assert (await agent.call("/vm/start", body))[0] == 200
            t0 = time.monotonic()
            await _virsh("reset", vm)
            await wait_for(lambda: _boots_from_hd(vm), timeout=20, what="restart from hd")
            await wait_for(lambda: _running(vm), timeout=10, what="running again")
            print(f"\nguest reset → restarted from hd in {time.monotonic() - t0:.2f} s")
            await asyncio.sleep(2.5)
            assert fc.reports == []
        finally:
            await agent.call("/vm/destroy", {"uuid": vm})


async def _boots_from_hd(vm: str) -> bool:
    return boot_devs(parse(await _virsh("dumpxml", "--inactive", vm))) == ["hd", "cdrom"]


async def _running(vm: str) -> bool:
    return "running" in await _virsh("domstate", vm)
