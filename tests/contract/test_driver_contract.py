"""The hypervisor driver contract (kvmagent.driver.base), run against every backend: libvirt's test driver
and the real root libvirtd (``qemu:///system``). The real backend is not optional: if libvirtd is not
reachable these tests fail."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import agent_env
import pytest
from agent_env import Env, make_disk, open_env, wait_for

from kvmagent.driver import devices
from kvmagent.driver.base import VmState
from kvmagent.driver.errors import DomainNotFound, HypervisorError, InvalidSpec, StateConflict
from kvmagent.driver.spec import DiskSpec, IsoSpec
from kvmagent.driver.xml.edit import boot_devs, cdrom_source, disk_element, parse

env = agent_env.env  # the driver fixture, one per backend (overrides the tier's controller env)


@pytest.fixture
async def qemu_env(tmp_path: Path) -> AsyncIterator[Env]:
    e = await open_env("qemu", tmp_path)
    try:
        yield e
    finally:
        await e.cleanup()


async def _xml(env: Env, vm_uuid: str, inactive: bool = False) -> str:
    guest = await env.driver.host.lookup(vm_uuid)
    assert guest is not None
    return await guest.xml(inactive=inactive)


async def test_probe_chooses_tcg_on_this_machine(env: Env) -> None:
    facts = await env.driver.host_facts()
    assert env.driver.domain_type == facts.domain_type == "qemu"
    assert facts.cpu_num >= 1 and facts.memory_bytes > 0 and facts.libvirt_version.count(".") == 2


async def test_start_is_idempotent_and_refuses_another_spec(env: Env) -> None:
    spec = await env.spec()
    await env.driver.start_vm(spec)
    await env.driver.start_vm(spec)
    assert await env.driver.vm_state(spec.uuid) == VmState.RUNNING
    with pytest.raises(StateConflict):
        await env.driver.start_vm(spec.__class__(**{**spec.__dict__, "cpu_num": 2}))
    assert await env.driver.vm_state(spec.uuid) == VmState.RUNNING


async def test_impossible_spec_fails_before_defining(env: Env) -> None:
    spec = await env.spec(cpu_mode="host-passthrough")
    with pytest.raises(InvalidSpec, match="host-passthrough needs KVM; this host runs TCG"):
        await env.driver.start_vm(spec)
    assert await env.driver.vm_state(spec.uuid) is None


async def test_failed_start_leaves_nothing_defined(qemu_env: Env) -> None:
    spec = await qemu_env.spec(root_disk=DiskSpec(str(qemu_env.tmp / "missing.qcow2"), "f" * 32, 0))
    with pytest.raises(HypervisorError):
        await qemu_env.driver.start_vm(spec)
    assert await qemu_env.driver.vm_state(spec.uuid) is None
    assert spec.uuid not in await qemu_env.driver.list_vms()


async def test_stop_destroy_undefine_of_missing_domain_succeed(env: Env) -> None:
    ghost = (await env.spec()).uuid
    await env.driver.stop_vm(ghost, grace=1)
    await env.driver.destroy_vm(ghost)
    await env.driver.undefine_vm(ghost)
    assert await env.driver.vm_state(ghost) is None


async def test_stop_is_idempotent_and_keeps_the_definition(env: Env) -> None:
    spec = await env.spec()
    await env.driver.start_vm(spec)
    await env.driver.stop_vm(spec.uuid, grace=0.5, force=True)
    await env.driver.stop_vm(spec.uuid, grace=0.5)
    assert await env.driver.vm_state(spec.uuid) == VmState.STOPPED
    await env.driver.undefine_vm(spec.uuid)
    await env.driver.undefine_vm(spec.uuid)
    assert await env.driver.vm_state(spec.uuid) is None


async def test_graceful_stop_of_os_less_guest_falls_back_to_destroy(qemu_env: Env) -> None:
    """SeaBIOS ignores the ACPI button: the driver must wait ``grace`` seconds, then destroy."""
    spec = await qemu_env.spec()
    await qemu_env.driver.start_vm(spec)
    t0 = time.monotonic()
    await qemu_env.driver.stop_vm(spec.uuid, grace=1.0)
    assert time.monotonic() - t0 >= 1.0
    assert await qemu_env.driver.vm_state(spec.uuid) == VmState.STOPPED
    assert any(e.vm_uuid == spec.uuid and e.reason == "destroyed" for e in qemu_env.events) or \
        await wait_for(lambda: any(e.vm_uuid == spec.uuid and e.reason == "destroyed"
                                   for e in qemu_env.events), what="STOPPED(destroyed) event")


async def test_graceful_stop_presses_the_power_button_again_until_grace_ends(
        qemu_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A guest still booting drops a press (the e2e tiny guest ignored one sent before its init scripts ended,
    and was destroyed only after the whole 60 s grace): the button is pressed every ACPI_RETRY seconds."""
    from kvmagent.driver import libvirt_driver
    from kvmagent.driver.host import Guest

    presses: list[float] = []
    real = Guest.shutdown_acpi

    async def counted(self: Guest) -> None:
        presses.append(time.monotonic())
        await real(self)

    monkeypatch.setattr(libvirt_driver, "ACPI_RETRY", 0.4)
    monkeypatch.setattr(Guest, "shutdown_acpi", counted)
    spec = await qemu_env.spec()
    await qemu_env.driver.start_vm(spec)
    t0 = time.monotonic()
    await qemu_env.driver.stop_vm(spec.uuid, grace=1.5)
    assert time.monotonic() - t0 >= 1.5
    assert len(presses) >= 3, presses
    assert all(b - a >= 0.4 for a, b in itertools.pairwise(presses)), presses
    assert await qemu_env.driver.vm_state(spec.uuid) == VmState.STOPPED


async def test_destroy_twice_and_state_listing(env: Env) -> None:
    a, b = await env.spec(), await env.spec()
    await env.driver.start_vm(a)
    await env.driver.start_vm(b)
    states = await env.driver.list_vms()
    assert states[a.uuid] == states[b.uuid] == VmState.RUNNING
    await env.driver.destroy_vm(a.uuid)
    await env.driver.destroy_vm(a.uuid)
    states = await env.driver.list_vms()
    assert a.uuid not in states and states[b.uuid] == VmState.RUNNING


async def test_events_reach_the_callback(env: Env) -> None:
    spec = await env.spec()
    await env.driver.start_vm(spec)
    await wait_for(lambda: any(e.vm_uuid == spec.uuid and e.state == VmState.RUNNING for e in env.events),
                   what="STARTED event")
    await env.driver.destroy_vm(spec.uuid)
    await wait_for(lambda: any(e.vm_uuid == spec.uuid and e.state == VmState.STOPPED for e in env.events),
                   what="STOPPED event")


async def test_graphics_port(env: Env) -> None:
    spec = await env.spec(console_mode="vnc")
    await env.driver.start_vm(spec)
    g = await env.driver.graphics(spec.uuid)
    assert g.protocol == "vnc" and g.listen == "127.0.0.1"
    if env.backend == "qemu":
        assert g.port is not None and g.port >= 5900
    with pytest.raises(DomainNotFound):
        await env.driver.graphics((await env.spec()).uuid)


async def test_reboot_rewrites_boot_order(env: Env) -> None:
    spec = await env.spec()
    await env.driver.start_vm(spec)
    await env.driver.reboot_vm(spec.uuid, ["cdrom", "hd"], grace=0.3)
    assert await env.driver.vm_state(spec.uuid) == VmState.RUNNING
    assert boot_devs(parse(await _xml(env, spec.uuid))) == ["cdrom", "hd"]
    with pytest.raises(DomainNotFound):
        await env.driver.reboot_vm((await env.spec()).uuid, ["hd"], grace=0.1)


async def test_cdrom_change(env: Env) -> None:
    """Live on the real backend; the test driver has no live update, so the definition changes."""
    iso = env.tmp / "disc.iso"
    iso.write_bytes(b"\0" * 2048 * 16)
    spec = await env.spec()
    await env.driver.start_vm(spec)
    live = env.backend == "qemu"
    await env.driver.change_cdrom(spec.uuid, IsoSpec(str(iso), "e" * 32))
    await env.driver.change_cdrom(spec.uuid, IsoSpec(str(iso), "e" * 32))
    assert cdrom_source(parse(await _xml(env, spec.uuid, inactive=not live))) == str(iso)
    await env.driver.change_cdrom(spec.uuid, None)
    assert cdrom_source(parse(await _xml(env, spec.uuid, inactive=not live))) is None
    assert await env.driver.vm_state(spec.uuid) == VmState.RUNNING


async def test_attach_detach_disk(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    data = await make_disk(env.tmp / "data.qcow2")
    spec = await env.spec()
    await env.driver.start_vm(spec)
    disk = DiskSpec(str(data), "d" * 32, 1)
    await env.driver.attach_disk(spec.uuid, disk)
    await env.driver.attach_disk(spec.uuid, disk)
    assert disk_element(parse(await _xml(env, spec.uuid, inactive=True)), "d" * 32) is not None
    if env.backend == "qemu":
        assert disk_element(parse(await _xml(env, spec.uuid)), "d" * 32) is not None
        # the guest runs only its firmware: it never answers the hot-unplug, so the detach fails, disk kept
        monkeypatch.setattr(devices, "DETACH_WAITS", (0.5,))
        with pytest.raises(devices.DetachTimeout, match="d" * 32):
            await env.driver.detach_disk(spec.uuid, "d" * 32)
        assert disk_element(parse(await _xml(env, spec.uuid)), "d" * 32) is not None
        assert disk_element(parse(await _xml(env, spec.uuid, inactive=True)), "d" * 32) is not None
        await env.driver.destroy_vm(spec.uuid, undefine=False)  # a stopped domain: the definition only
    await env.driver.detach_disk(spec.uuid, "d" * 32)
    await env.driver.detach_disk(spec.uuid, "d" * 32)
    assert disk_element(parse(await _xml(env, spec.uuid, inactive=True)), "d" * 32) is None


async def test_capacity_counts_running_domains(env: Env) -> None:
    before = await env.driver.capacity()
    spec = await env.spec(cpu_num=2, memory_bytes=96 << 20)
    await env.driver.start_vm(spec)
    during = await env.driver.capacity()
    assert during.total_memory_bytes > during.used_memory_bytes >= 96 << 20 and during.used_cpu >= 2
    if env.backend == "test":  # the root libvirtd is shared with other test runs: only bounds there
        assert during.used_cpu - before.used_cpu == 2
        assert during.used_memory_bytes - before.used_memory_bytes == 96 << 20
        await env.driver.destroy_vm(spec.uuid)
        assert (await env.driver.capacity()).used_cpu == before.used_cpu
