"""``vm/dataVolume.deleteOnVmDestroy`` through the real API against real in-process agents (libvirt test
driver + real StorageService/qemu-img): false (default) detaches a destroyed VM's data volumes and keeps them
usable; true deletes them with ``volume/deletionPolicy`` as DeleteDataVolume does (Delay: Deleted, bits and
capacity kept, recoverable; Direct: bits, refs and rows gone); a Direct deletion the host cannot do leaves
the volume Deleted for the expunge task, and the destroy still succeeds."""

from __future__ import annotations

from typing import Any

import test_controller_compute as tcc
from test_controller_compute import Env
from test_local_storage_api import _adds_up, _refs, _vm_with_data, exists

env = tcc.env  # the fixture: a controller, two connected in-process agents, a local PS attached


async def _row(e: Env, uuid: str) -> dict[str, Any] | None:
    row = await e.core.db.fetchone("SELECT * FROM Volume WHERE uuid=?", (uuid,))
    return dict(row) if row else None


async def _config(e: Env, category: str, name: str, value: str) -> None:
    await e.call("UpdateGlobalConfig", category=category, name=name, value=value)


async def _destroy(e: Env, vm: dict[str, Any], vol: dict[str, Any], status: str) -> None:
    """DestroyVmInstance succeeds; the data volume's row stays, detached, with ``status``."""
    await e.call("DestroyVmInstance", uuid=vm["uuid"])
    row = await _row(e, vol["uuid"])
    assert row is not None and row["status"] == status, row
    assert row["vmInstanceUuid"] is None and row["deviceId"] is None, row


async def test_default_detaches_and_keeps_the_volume(env: Env) -> None:
    e = env
    vm, vol = await _vm_with_data(e)
    await _destroy(e, vm, vol, "Ready")
    assert exists(vol["installPath"]) and vol["uuid"] in await _refs(e)
    await _adds_up(e)
    destroyed = await e.vm(vm["uuid"])
    assert destroyed["state"] == "Destroyed"
    assert vol["uuid"] not in [v["uuid"] for v in destroyed["allVolumes"]]
    # the kept volume serves another VM on the same host (local storage)
    status, body = await e.create_vm("vm2", hostUuid=vm["hostUuid"])
    assert status == 200, body
    vm2 = body["inventory"]
    att = await e.inv("AttachDataVolumeToVm", vmInstanceUuid=vm2["uuid"], volumeUuid=vol["uuid"])
    assert att["vmInstanceUuid"] == vm2["uuid"] and att["status"] == "Ready"
    # recovering the first VM does not take the volume back
    assert (await e.inv("RecoverVmInstance", uuid=vm["uuid"]))["state"] == "Stopped"
    assert (await _row(e, vol["uuid"]) or {})["vmInstanceUuid"] == vm2["uuid"]


async def test_true_with_delay_policy_marks_deleted_and_recovers(env: Env) -> None:
    e = env
    await _config(e, "vm", "dataVolume.deleteOnVmDestroy", "true")
    vm, vol = await _vm_with_data(e)
    await _destroy(e, vm, vol, "Deleted")
    assert exists(vol["installPath"]) and vol["uuid"] in await _refs(e)  # bits and capacity kept (Delay)
    await _adds_up(e)
    rec = await e.inv("RecoverDataVolume", uuid=vol["uuid"])
    assert rec["status"] == "Ready" and rec["vmInstanceUuid"] is None


async def test_true_with_direct_policies_removes_everything(env: Env) -> None:
    e = env
    await _config(e, "vm", "dataVolume.deleteOnVmDestroy", "true")
    await _config(e, "volume", "deletionPolicy", "Direct")
    await _config(e, "vm", "deletionPolicy", "Direct")
    vm, vol = await _vm_with_data(e)
    off = await e.inv("CreateDiskOffering", name="d2", diskSize=32 << 20)
    never = await e.inv("CreateDataVolume", name="never", diskOfferingUuid=off["uuid"])
    await e.call("StopVmInstance", uuid=vm["uuid"])
    await e.call("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=never["uuid"])
    await e.call("DestroyVmInstance", uuid=vm["uuid"])
    assert await _row(e, vol["uuid"]) is None and await _row(e, never["uuid"]) is None
    assert not exists(vol["installPath"])
    refs = await _refs(e)
    assert vol["uuid"] not in refs and never["uuid"] not in refs and vm["rootVolumeUuid"] not in refs
    assert await e.core.db.fetchone("SELECT 1 FROM VmInstance WHERE uuid=?", (vm["uuid"],)) is None
    await _adds_up(e)


async def test_false_is_untouched_by_volume_policy(env: Env) -> None:
    e = env
    await _config(e, "volume", "deletionPolicy", "Direct")
    vm, vol = await _vm_with_data(e)
    await _destroy(e, vm, vol, "Ready")
    assert exists(vol["installPath"])


async def test_direct_that_cannot_reach_the_host_leaves_it_deleted(env: Env) -> None:
    e = env
    await _config(e, "vm", "dataVolume.deleteOnVmDestroy", "true")
    await _config(e, "volume", "deletionPolicy", "Direct")
    vm, vol = await _vm_with_data(e)
    await e.call("StopVmInstance", uuid=vm["uuid"])
    agent = next(a for a in e.agents if a.config.host_uuid == vm["hostUuid"])
    await agent.runner.cleanup()  # the volume's host dies
    e.agents.remove(agent)
    st, body = await e.raw("ReconnectHost", uuid=agent.config.host_uuid)
    assert st >= 400, body
    await _destroy(e, vm, vol, "Deleted")  # a Stopped VM on a Disconnected host: no agent call
    assert exists(vol["installPath"]) and vol["uuid"] in await _refs(e)
