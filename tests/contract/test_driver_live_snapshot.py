"""Live snapshots through the driver (``switch_disk_top``) and ``storage.snapshots.create_live``, on both
backends: the real root libvirtd runs a QEMU process on the volume (writes go through QEMU's own block layer
with the HMP ``qemu-io`` command), libvirt's test driver must refuse clearly and change nothing."""

from __future__ import annotations

import os
from pathlib import Path

import agent_env
import libvirt
import libvirt_qemu
import pytest
from agent_env import Env, make_disk, open_env

from kvmagent.contract.base import AgentError
from kvmagent.driver.base import VmState
from kvmagent.driver.livesnap import LiveSnapshotUnsupported
from kvmagent.driver.spec import DiskSpec
from kvmagent.driver.xml.edit import disk_element, parse
from storage import qemuimg, snapshots
from zsutil.runner import run

MiB = 1 << 20

env = agent_env.env  # the driver fixture, one per backend (overrides the tier's controller env)


async def _qio(path: Path | str, op: str, *, shared: bool = False) -> bool:
    flags = ["-r", "-U"] if shared else []
    res = await run(["qemu-io", *flags, "-f", "qcow2", "-c", op, str(path)], timeout=60, ok_codes=(0, 1))
    return res.rc == 0 and "failed" not in (res.stdout + res.stderr).lower()


async def _guest_write(env: Env, vm_uuid: str, pattern: int, offset: int) -> None:
    """Write (and flush) through the running QEMU's block graph, as the guest's virtio disk would."""
    guest = await env.driver.host.lookup(vm_uuid)
    assert guest is not None
    for op in (f"write -P {pattern} {offset} 64k", "flush"):
        cmd = f'qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend "{op}"'
        out = await env.driver.host.raw(libvirt_qemu.qemuMonitorCommand, guest.dom, cmd,
                                        libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        assert "error" not in out.lower() and "conflict" not in out.lower(), out


def _open_inodes(vm_name: str, under: Path) -> set[int]:
    """Inodes of the files under ``under`` the VM's QEMU process has open."""
    pid = int(Path(f"/run/libvirt/qemu/{vm_name}.pid").read_text())
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
        if link.startswith(str(under)):
            out.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
    return out


async def _switcher(env: Env, vm_uuid: str, volume_uuid: str) -> snapshots.SwitchFn:
    async def switch(new_top: Path) -> None:
        await env.driver.switch_disk_top(vm_uuid, volume_uuid, str(new_top))
    return switch


async def test_live_snapshot_switches_qemu_and_keeps_the_path(env: Env) -> None:
    spec = await env.spec()
    vol, serial = Path(spec.root_disk.path), spec.root_disk.volume_uuid
    assert await _qio(vol, f"write -P 0x11 {MiB} 64k")
    await env.driver.start_vm(spec)
    switch = await _switcher(env, spec.uuid, serial)
    if env.backend == "test":
        assert not (await env.driver.host_facts()).live_snapshot
        with pytest.raises(LiveSnapshotUnsupported) as e:
            await snapshots.create_live(vol, "s1", switch)
        assert e.value.status == 501 and e.value.code == "VM.LIVE_SNAPSHOT_UNSUPPORTED"
        assert not (vol.parent / "snapshots").exists() and not (vol.parent / "live").exists()
        assert await env.driver.vm_state(spec.uuid) == VmState.RUNNING
        return
    assert (await env.driver.host_facts()).live_snapshot
    s1 = await snapshots.create_live(vol, "s1", switch)
    assert await env.driver.vm_state(spec.uuid) == VmState.RUNNING
    # QEMU has exactly the new top (the file at the volume path) and the snapshot open
    assert _open_inodes(spec.uuid, env.tmp) == {os.stat(vol).st_ino, os.stat(s1).st_ino}
    await _guest_write(env, spec.uuid, 0x22, MiB)
    s2 = await snapshots.create_live(vol, "s2", switch)
    assert _open_inodes(spec.uuid, env.tmp) == {os.stat(p).st_ino for p in (vol, s1, s2)}
    await _guest_write(env, spec.uuid, 0x33, MiB)
    # the persistent definition names the volume path again, with no stale <backingStore> chain
    guest = await env.driver.host.lookup(spec.uuid)
    assert guest is not None
    disk = disk_element(parse(await guest.xml(inactive=True)), serial)
    assert disk is not None and disk.find("source").get("file") == str(vol)  # type: ignore[union-attr]
    assert disk.find("backingStore") is None
    await env.driver.destroy_vm(spec.uuid, undefine=False)
    assert [li.path for li in await snapshots.verify(vol)] == [str(vol), str(s2), str(s1)]
    assert await _qio(vol, f"read -P 0x33 {MiB} 64k")
    assert await _qio(s2, f"read -P 0x22 {MiB} 64k") and await _qio(s1, f"read -P 0x11 {MiB} 64k")
    # a stopped VM's definition starts again on the volume path (libvirt probes the chain from the headers)
    await guest.create()
    assert _open_inodes(spec.uuid, env.tmp) == {os.stat(p).st_ino for p in (vol, s1, s2)}


async def test_failed_switch_on_real_qemu_is_undone(env: Env) -> None:
    spec = await env.spec()
    vol = Path(spec.root_disk.path)
    await env.driver.start_vm(spec)
    inode = os.stat(vol).st_ino
    switch = await _switcher(env, spec.uuid, "not-attached-volume")
    with pytest.raises(AgentError) as e:
        await snapshots.create_live(vol, "s1", switch)
    want = ("VM.DISK_NOT_FOUND", 404) if env.backend == "qemu" else ("VM.LIVE_SNAPSHOT_UNSUPPORTED", 501)
    assert (e.value.code, e.value.status) == want
    assert os.stat(vol).st_ino == inode and os.stat(vol).st_nlink == 1
    assert sorted(p.name for p in (vol.parent / "snapshots").glob("*")) == []
    assert not (vol.parent / "live").exists()
    assert (await qemuimg.info(vol)).full_backing_filename is None
    if env.backend == "qemu":
        assert _open_inodes(spec.uuid, env.tmp) == {inode}


async def test_switch_of_stopped_or_missing_vm(env: Env) -> None:
    """Missing domain: 404; stopped: 409 on QEMU (the test driver refuses every live snapshot: 501)."""
    spec = await env.spec()
    with pytest.raises(AgentError) as e:
        await env.driver.switch_disk_top(spec.uuid, spec.root_disk.volume_uuid, "/nonexistent.qcow2")
    assert e.value.status == 404
    await env.driver.start_vm(spec)
    await env.driver.stop_vm(spec.uuid, grace=0, force=True)
    with pytest.raises(AgentError) as e:
        await env.driver.switch_disk_top(spec.uuid, spec.root_disk.volume_uuid, "/nonexistent.qcow2")
    assert e.value.status == (409 if env.backend == "qemu" else 501) and "offline" in e.value.message
    assert libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA  # the flag the driver relies on exists here



async def test_live_snapshot_of_a_hot_plugged_data_disk(tmp_path: Path) -> None:
    """QEMU only (the test driver refuses every live snapshot; the tests above check that)."""
    env = await open_env("qemu", tmp_path)
    try:
        await _data_disk_case(env)
    finally:
        await env.cleanup()


async def _data_disk_case(env: Env) -> None:
    spec = await env.spec()
    await env.driver.start_vm(spec)
    data = env.tmp / "data" / "data.qcow2"
    data.parent.mkdir()
    await make_disk(data)
    await env.driver.attach_disk(spec.uuid, DiskSpec(str(data), "d" * 32, 1))
    root_inode = os.stat(spec.root_disk.path).st_ino
    snap = await snapshots.create_live(data, "s1", await _switcher(env, spec.uuid, "d" * 32))
    assert _open_inodes(spec.uuid, env.tmp) == {root_inode, os.stat(data).st_ino, os.stat(snap).st_ino}
    assert os.stat(data).st_ino != os.stat(snap).st_ino
    assert await env.driver.vm_state(spec.uuid) == VmState.RUNNING
