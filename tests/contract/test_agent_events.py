"""Events → state reports, with a fake controller (aiohttp on port 0) and the test driver."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from agent_env import wait_for
from agent_harness import TOKEN, fake_controller, running_agent, start_body

from kvmagent.driver.base import DomainEvent
from kvmagent.driver.xml.edit import boot_devs, parse


async def _out_of_band_destroy(agent, vm: str) -> None:  # type: ignore[no-untyped-def]
    """What ``virsh destroy`` does, on the agent's own test-driver connection (its state is private)."""
    guest = await agent.ctx.driver.host.lookup(vm)
    await guest.destroy()


async def test_out_of_band_stop_is_reported_and_own_ops_are_not(tmp_path: Path) -> None:
    async with fake_controller() as (fc, url), running_agent(tmp_path, controller_url=url) as agent:
        vm = uuid.uuid4().hex
        assert (await agent.call("/vm/start", start_body(vm, str(tmp_path / "r"))))[0] == 200
        await asyncio.sleep(0.3)
        assert fc.reports == []  # the agent's own start: swallowed
        t0 = time.time()
        await _out_of_band_destroy(agent, vm)
        await wait_for(lambda: fc.reports, timeout=1.0, what="a Stopped report within a second")
        report = fc.reports[0]
        assert report == {"hostUuid": agent.config.host_uuid, "vmUuid": vm, "vmState": "Stopped",
                          "reason": "destroyed", "ts": report["ts"]}
        assert 0 <= report["ts"] - t0 < 1.0 and fc.auth[0] == f"Bearer {TOKEN}"
        vm2 = uuid.uuid4().hex
        assert (await agent.call("/vm/start", start_body(vm2, str(tmp_path / "r2"))))[0] == 200
        assert (await agent.call("/vm/stop", {"uuid": vm2, "timeout": 1}))[0] == 200
        assert (await agent.call("/vm/destroy", {"uuid": vm}))[0] == 200
        await asyncio.sleep(0.5)
        assert len(fc.reports) == 1


async def test_reports_wait_for_the_controller_and_newest_state_wins(tmp_path: Path) -> None:
    async with fake_controller() as (fc, url), running_agent(tmp_path, controller_url=url,
                                                             judger_ttl=0.0) as agent:
        fc.up = False
        vm = uuid.uuid4().hex
        body = start_body(vm, str(tmp_path / "r"))
        assert (await agent.call("/vm/start", body))[0] == 200
        await asyncio.sleep(0.2)
        await _out_of_band_destroy(agent, vm)   # Stopped, then Running again: only Running must arrive
        guest = await agent.ctx.driver.host.lookup(vm)
        await guest.create()
        await wait_for(lambda: len(fc.auth) >= 2, what="retries while the controller is away")
        assert agent.ctx.events.pending == 1
        fc.up = True
        await wait_for(lambda: fc.reports, timeout=3.0, what="delivery after the controller came back")
        await asyncio.sleep(0.2)
        assert [(r["vmUuid"], r["vmState"]) for r in fc.reports] == [(vm, "Running")]
        assert agent.ctx.events.pending == 0


async def test_connection_loss_sends_reconnect_me_and_recovers(tmp_path: Path) -> None:
    async with fake_controller() as (fc, url), running_agent(tmp_path, controller_url=url) as agent:
        boot_id = agent.ctx.boot_id
        agent.ctx.driver._closed(None, 1, None)  # what libvirt calls when the connection drops (EOF)
        await wait_for(lambda: any(r.get("kind") == "reconnectMe" for r in fc.reports), what="reconnectMe")
        report = next(r for r in fc.reports if r.get("kind") == "reconnectMe")
        assert report == {"hostUuid": agent.config.host_uuid, "kind": "reconnectMe",
                          "reason": "libvirt connection closed: end of file"}
        await wait_for(lambda: agent.ctx.ready, what="reconnect and reconcile")
        assert (await agent.call("/vm/vmsync"))[0] == 200 and agent.ctx.boot_id == boot_id


async def test_cd_then_disk_on_guest_reboot(tmp_path: Path) -> None:
    """The test driver emits no REBOOT event, so the event libvirt would send is fed to the tracker;
    tests/functional/test_agent_events_real.py triggers the real one with a guest reset."""
    async with fake_controller() as (fc, url), running_agent(tmp_path, controller_url=url) as agent:
        vm = uuid.uuid4().hex
        iso = {"path": str(tmp_path / "x.iso"), "imageUuid": "e" * 32}
        body = start_body(vm, str(tmp_path / "r"), bootDev=["cdrom"], bootIso=iso, firstBootFromCd=True)
        assert (await agent.call("/vm/start", body))[0] == 200
        await agent.ctx.tracker.on_event(DomainEvent(vm, None, "rebooted", rebooted=True))
        guest = await agent.ctx.driver.host.lookup(vm)
        assert boot_devs(parse(await guest.xml())) == ["hd", "cdrom"]
        assert (await agent.call("/vm/checkstate", {"vmUuids": [vm]}))[1]["states"][vm] == "Running"
        assert not await agent.ctx.driver.first_boot_from_cd(vm)
        await agent.ctx.tracker.on_event(DomainEvent(vm, None, "rebooted", rebooted=True))
        assert boot_devs(parse(await guest.xml())) == ["hd", "cdrom"]
        await asyncio.sleep(0.3)
        assert fc.reports == []


async def test_restart_reconciles_existing_domains(tmp_path: Path) -> None:
    """A second agent on the same hypervisor state adopts what runs (reports only later changes)."""
    async with running_agent(tmp_path) as agent:
        vm = uuid.uuid4().hex
        assert (await agent.call("/vm/start", start_body(vm, str(tmp_path / "r"))))[0] == 200
        agent.ctx.tracker.reset({})
        from kvmagent.lifecycle import reconcile
        await reconcile(agent.ctx)
        assert set(agent.ctx.tracker.known) == {vm}


async def test_suspend_and_resume_out_of_band_are_both_reported_at_once(tmp_path: Path) -> None:
    """``virsh suspend`` then ``virsh resume``: a Paused and then a Running report, each within a second, even
    right after the agent's own start (its expectation of Running must not swallow a resume)."""
    async with fake_controller() as (fc, url), running_agent(tmp_path, controller_url=url) as agent:
        vm = uuid.uuid4().hex
        assert (await agent.call("/vm/start", start_body(vm, str(tmp_path / "r"))))[0] == 200
        await asyncio.sleep(0.3)
        assert fc.reports == []
        guest = await agent.ctx.driver.host.lookup(vm)
        await agent.ctx.driver.host.call("suspend", guest.dom.suspend)
        await wait_for(lambda: len(fc.reports) >= 1, timeout=1.0, what="a Paused report within a second")
        await agent.ctx.driver.host.call("resume", guest.dom.resume)
        await wait_for(lambda: len(fc.reports) >= 2, timeout=1.0, what="a Running report within a second")
        assert [(r["vmUuid"], r["vmState"], r["reason"]) for r in fc.reports] == [
            (vm, "Paused", "suspended"), (vm, "Running", "resumed")]
        assert (await agent.call("/vm/destroy", {"uuid": vm}))[0] == 200
