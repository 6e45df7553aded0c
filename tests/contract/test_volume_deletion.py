"""Data volume deletion policies against real in-process agents (real StorageService + qemu-img): Delay
(recover → attach → the VM starts with it), expunge (files, snapshots, rows, refs, tags, capacity), Direct,
Never, the expunge task on time, and 1.0's errors for recover/expunge of expunged or never-deleted volumes."""

from __future__ import annotations

import asyncio
from typing import Any

import test_controller_compute as tcc
from test_controller_compute import Env
from test_local_storage_api import _adds_up, _refs, _vm_with_data, exists

env = tcc.env  # the fixture: a controller, two connected in-process agents, a local PS attached
MiB = 1 << 20


async def _row(e: Env, uuid: str) -> dict[str, Any] | None:
    row = await e.core.db.fetchone("SELECT * FROM Volume WHERE uuid=?", (uuid,))
    return dict(row) if row else None


async def _error(e: Env, api_name: str, status: int, code: str, words: str, **params: Any) -> None:
    st, body = await e.raw(api_name, **params)
    assert st == status and body["error"]["code"] == code and words in body["error"]["details"], body


async def _gone(e: Env, uuid: str) -> bool:
    return await _row(e, uuid) is None


async def test_delay_delete_recover_attach_and_start(env: Env) -> None:
    e = env
    vm, vol = await _vm_with_data(e)
    await e.call("DeleteDataVolume", uuid=vol["uuid"])
    row = await _row(e, vol["uuid"])
    assert row is not None and row["status"] == "Deleted" and row["vmInstanceUuid"] is None
    assert exists(vol["installPath"]) and vol["uuid"] in await _refs(e)  # bits and capacity kept
    await _adds_up(e)
    await _error(e, "DeleteDataVolume", 409, "SYS.1006", "already deleted", uuid=vol["uuid"])
    await _error(e, "AttachDataVolumeToVm", 409, "SYS.1006", "Deleted", vmInstanceUuid=vm["uuid"],
                 volumeUuid=vol["uuid"])
    await e.call("StopVmInstance", uuid=vm["uuid"])
    rec = await e.inv("RecoverDataVolume", uuid=vol["uuid"])
    assert rec["status"] == "Ready" and rec["installPath"] == vol["installPath"]
    att = await e.inv("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=vol["uuid"])
    assert att["vmInstanceUuid"] == vm["uuid"]
    started = await e.inv("StartVmInstance", uuid=vm["uuid"])
    assert started["state"] == "Running" and vol["uuid"] in [v["uuid"] for v in started["allVolumes"]]
    await _adds_up(e)
    await _error(e, "RecoverDataVolume", 409, "SYS.1006", "not deleted", uuid=vol["uuid"])
    await _error(e, "ExpungeDataVolume", 409, "SYS.1006", "not deleted", uuid=vol["uuid"])
    await _error(e, "DeleteDataVolume", 400, "SYS.1007", "Root", uuid=vm["rootVolumeUuid"])


async def test_expunge_removes_files_snapshots_rows_and_tags(env: Env) -> None:
    e = env
    vm, vol = await _vm_with_data(e)
    await e.call("CreateUserTag", resourceType="VolumeVO", resourceUuid=vol["uuid"], tag="owner::bob")
    await e.call("StopVmInstance", uuid=vm["uuid"])
    snap = await e.inv("CreateVolumeSnapshot", volumeUuid=vol["uuid"], name="s")
    await e.call("DeleteDataVolume", uuid=vol["uuid"])
    assert exists(snap["primaryStorageInstallPath"])
    await e.call("ExpungeDataVolume", uuid=vol["uuid"])
    assert not exists(vol["installPath"]) and not exists(snap["primaryStorageInstallPath"])
    assert await _gone(e, vol["uuid"])
    for table, col in (("VolumeSnapshot", "volumeUuid"), ("UserTag", "resourceUuid"),
                       ("LocalStorageResourceRef", "resourceUuid")):
        assert await e.core.db.fetchone(f"SELECT 1 FROM {table} WHERE {col}=?", (vol["uuid"],)) is None
    assert snap["uuid"] not in await _refs(e)
    await _adds_up(e)
    await _error(e, "RecoverDataVolume", 404, "SYS.1003", "not found", uuid=vol["uuid"])
    await _error(e, "ExpungeDataVolume", 404, "SYS.1003", "not found", uuid=vol["uuid"])
    await e.call("DeleteDataVolume", uuid=vol["uuid"])  # an unknown uuid succeeds (1.0)


async def test_direct_policy_deletes_at_once(env: Env) -> None:
    e = env
    await e.call("UpdateGlobalConfig", category="volume", name="deletionPolicy", value="Direct")
    _, vol = await _vm_with_data(e)
    await e.call("DeleteDataVolume", uuid=vol["uuid"])
    assert await _gone(e, vol["uuid"]) and not exists(vol["installPath"])
    assert vol["uuid"] not in await _refs(e)
    await _adds_up(e)


async def test_never_instantiated_volume_recovers_as_not_instantiated(env: Env) -> None:
    e = env
    off = await e.inv("CreateDiskOffering", name="d", diskSize=MiB)
    vol = await e.inv("CreateDataVolume", name="empty", diskOfferingUuid=off["uuid"])
    await e.call("DeleteDataVolume", uuid=vol["uuid"])
    assert (await e.inv("RecoverDataVolume", uuid=vol["uuid"]))["status"] == "NotInstantiated"
    await e.call("DeleteDataVolume", uuid=vol["uuid"])
    await e.call("ExpungeDataVolume", uuid=vol["uuid"])
    assert await _gone(e, vol["uuid"])


async def test_expunge_task_on_time_and_never_policy(env: Env) -> None:
    e = env
    await e.call("UpdateGlobalConfig", category="volume", name="expungePeriod", value="2")
    await e.call("UpdateGlobalConfig", category="volume", name="expungeInterval", value="1")
    _, delayed = await _vm_with_data(e)
    await e.call("DeleteDataVolume", uuid=delayed["uuid"])
    await asyncio.sleep(1.0)
    assert (await _row(e, delayed["uuid"]) or {}).get("status") == "Deleted"  # not before expungePeriod
    for _ in range(50):
        if await _gone(e, delayed["uuid"]):
            break
        await asyncio.sleep(0.2)
    assert await _gone(e, delayed["uuid"]), "a Delay volume was not expunged within expungePeriod + margin"
    assert not exists(delayed["installPath"]) and delayed["uuid"] not in await _refs(e)
    await _adds_up(e)
    await e.call("UpdateGlobalConfig", category="volume", name="deletionPolicy", value="Never")
    off = await e.inv("CreateDiskOffering", name="d3", diskSize=MiB)
    kept = await e.inv("CreateDataVolume", name="kept", diskOfferingUuid=off["uuid"])
    await e.call("DeleteDataVolume", uuid=kept["uuid"])
    await asyncio.sleep(4.0)
    assert (await _row(e, kept["uuid"]) or {}).get("status") == "Deleted"
    assert (await e.inv("RecoverDataVolume", uuid=kept["uuid"]))["status"] == "NotInstantiated"
