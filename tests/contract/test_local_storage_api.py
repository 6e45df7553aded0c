"""Local primary storage on the controller against two real in-process agents (libvirt test driver + real
StorageService/qemu-img): capacity refs that add up, data volumes, offline snapshots, and
LocalStorageMigrateVolume's rules and rollback. Both agents share this machine's filesystem, so the copy
itself (identical absolute paths on two hosts) is proven in tests/e2e/test_local_storage.py."""

from __future__ import annotations

import os
from typing import Any

import test_controller_compute as tcc
from test_controller_compute import Env

env = tcc.env  # the fixture: a controller, two connected in-process agents, a local PS attached
MiB = 1 << 20


def exists(path: str) -> bool:
    return os.path.isfile(path)


async def _ps(e: Env) -> str:
    return str((await e.call("QueryPrimaryStorage", conditions=[]))["inventories"][0]["uuid"])


async def _refs(e: Env) -> dict[str, tuple[str, int, str]]:
    rows = await e.core.db.fetchall("SELECT * FROM LocalStorageResourceRef")
    return {r["resourceUuid"]: (r["hostUuid"], r["size"], r["resourceType"]) for r in rows}


async def _adds_up(e: Env) -> dict[str, dict[str, Any]]:
    """available = total − Σ resource refs on every host; PS totals = sums over hosts."""
    ps = await _ps(e)
    caps = (await e.call("GetLocalStorageHostDiskCapacity", primaryStorageUuid=ps))["inventories"]
    assert len(caps) == 2
    refs = await _refs(e)
    for c in caps:
        used = sum(size for host, size, _ in refs.values() if host == c["hostUuid"])
        assert c["availableCapacity"] == c["totalCapacity"] - used, (c, refs)
        assert c["totalPhysicalCapacity"] > 0 and c["availablePhysicalCapacity"] > 0
    inv = (await e.call("QueryPrimaryStorage", conditions=[]))["inventories"][0]
    assert inv["totalCapacity"] == sum(c["totalCapacity"] for c in caps)
    assert inv["availableCapacity"] == sum(c["availableCapacity"] for c in caps)
    return {c["hostUuid"]: c for c in caps}


async def _vm_with_data(e: Env) -> tuple[dict[str, Any], dict[str, Any]]:
    status, body = await e.create_vm("vm1")
    assert status == 200, body
    vm = body["inventory"]
    off = await e.inv("CreateDiskOffering", name="d", diskSize=64 * MiB)
    vol = await e.inv("CreateDataVolume", name="data", diskOfferingUuid=off["uuid"])
    assert vol["status"] == "NotInstantiated" and vol["installPath"] is None
    assert vol["uuid"] not in await _refs(e)
    vol = await e.inv("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=vol["uuid"])
    assert vol["status"] == "Ready" and vol["vmInstanceUuid"] == vm["uuid"] and exists(vol["installPath"])
    return vm, vol


async def test_capacity_volumes_and_snapshots(env: Env) -> None:
    e = env
    before = await _adds_up(e)
    vm, vol = await _vm_with_data(e)
    refs = await _refs(e)
    assert refs[vm["rootVolumeUuid"]][0] == vm["hostUuid"] and refs[vol["uuid"]] == (vm["hostUuid"], 64 * MiB,
                                                                                          "VolumeVO")
    caps = await _adds_up(e)
    assert caps[vm["hostUuid"]]["availableCapacity"] < before[vm["hostUuid"]]["availableCapacity"]
    # the simulated hosts' test driver cannot snapshot live: refused while the VM runs, nothing written
    status, body = await e.raw("CreateVolumeSnapshot", volumeUuid=vol["uuid"], name="s")
    assert status == 409 and body["error"]["code"] == "VM.1010", body
    assert await e.core.db.fetchone("SELECT 1 FROM VolumeSnapshot") is None
    await e.call("StopVmInstance", uuid=vm["uuid"])
    snaps = [await e.inv("CreateVolumeSnapshot", volumeUuid=vol["uuid"], name=f"s{i}") for i in range(3)]
    assert snaps[0]["parentUuid"] is None and snaps[1]["parentUuid"] == snaps[0]["uuid"]
    assert len({s["treeUuid"] for s in snaps}) == 1 and all(exists(s["primaryStorageInstallPath"])
                                                            for s in snaps)
    refs = await _refs(e)
    assert all(refs[s["uuid"]][2] == "VolumeSnapshotVO" for s in snaps)
    await _adds_up(e)
    await e.call("RevertVolumeFromSnapshot", uuid=snaps[1]["uuid"])
    latest = await e.core.db.fetchall("SELECT uuid FROM VolumeSnapshot WHERE latest=1")
    assert [r["uuid"] for r in latest] == [snaps[1]["uuid"]]
    await e.call("DeleteVolumeSnapshot", uuid=snaps[1]["uuid"])
    assert not exists(snaps[1]["primaryStorageInstallPath"])
    row = await e.core.db.fetchone("SELECT parentUuid, latest FROM VolumeSnapshot WHERE uuid=?", (snaps[2]["uuid"],))
    assert row["parentUuid"] == snaps[0]["uuid"]
    assert snaps[1]["uuid"] not in await _refs(e)
    await _adds_up(e)
    # the VM still starts on its host with the data volume attached
    started = await e.inv("StartVmInstance", uuid=vm["uuid"])
    assert started["hostUuid"] == vm["hostUuid"]
    await e.call("DeleteDataVolume", uuid=vol["uuid"])
    await e.call("ExpungeDataVolume", uuid=vol["uuid"])  # volume/deletionPolicy defaults to Delay (§3.10)
    assert not exists(vol["installPath"])
    refs = await _refs(e)
    assert set(refs) == {vm["rootVolumeUuid"]}
    await _adds_up(e)


async def test_migration_rules_change_nothing(env: Env) -> None:
    e = env
    vm, vol = await _vm_with_data(e)
    other = next(h["uuid"] for h in await e.hosts() if h["uuid"] != vm["hostUuid"])

    async def refused(volume: str, dest: str, status: int, code: str, words: str) -> None:
        refs, caps = await _refs(e), await _adds_up(e)
        st, body = await e.raw("LocalStorageMigrateVolume", volumeUuid=volume, destHostUuid=dest)
        assert st == status and body["error"]["code"] == code and words in body["error"]["details"], body
        assert await _refs(e) == refs and await _adds_up(e) == caps

    await refused(vol["uuid"], vm["hostUuid"], 400, "SYS.1007", "is already on the host")
    await refused(vol["uuid"], other, 400, "SYS.1007", "still attached")
    await refused(vm["rootVolumeUuid"], other, 409, "SYS.1006", "state of Running")
    await e.call("StopVmInstance", uuid=vm["uuid"])
    await refused(vm["rootVolumeUuid"], other, 409, "SYS.1006", "data volumes attached")
    off = await e.inv("CreateDiskOffering", name="d2", diskSize=MiB)
    fresh = await e.inv("CreateDataVolume", name="new", diskOfferingUuid=off["uuid"])
    await refused(fresh["uuid"], other, 400, "SYS.1007", "not on the local storage")
    await e.call("DetachDataVolumeFromVm", uuid=vol["uuid"])
    # a host outside the PS's clusters
    zone = e.ids["zone"]
    c2 = await e.inv("CreateCluster", name="c2", zoneUuid=zone, hypervisorType="KVM")
    async with e.core.db.write() as tx:
        await tx.update("Host", {"uuid": other}, {"clusterUuid": c2["uuid"]})
    await refused(vol["uuid"], other, 400, "SYS.1007", "doesn't belong to the local primary storage")
    assert (await e.call("LocalStorageGetVolumeMigratableHosts", volumeUuid=vol["uuid"]))["inventories"] == []
    async with e.core.db.write() as tx:
        await tx.update("Host", {"uuid": other}, {"clusterUuid": e.ids["cluster"]})
    hosts = (await e.call("LocalStorageGetVolumeMigratableHosts", volumeUuid=vol["uuid"]))["inventories"]
    assert [h["uuid"] for h in hosts] == [other]
    # not enough capacity on the destination
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE LocalStorageHostRef SET availableCapacity=? WHERE hostUuid=?", (MiB, other))
    assert (await e.call("LocalStorageGetVolumeMigratableHosts", volumeUuid=vol["uuid"]))["inventories"] == []
    refs = await _refs(e)
    st, body = await e.raw("LocalStorageMigrateVolume", volumeUuid=vol["uuid"], destHostUuid=other)
    assert st == 409 and "not enough capacity" in body["error"]["details"], body
    assert await _refs(e) == refs


async def test_failed_copy_rolls_back(env: Env) -> None:
    e = env
    vm, vol = await _vm_with_data(e)
    await e.call("DetachDataVolumeFromVm", uuid=vol["uuid"])
    other = next(a for a in e.agents if a.config.host_uuid != vm["hostUuid"])
    refs, caps = await _refs(e), await _adds_up(e)
    await other.runner.cleanup()  # the destination agent dies: the copy cannot reach it
    e.agents.remove(other)
    st, body = await e.raw("LocalStorageMigrateVolume", volumeUuid=vol["uuid"], destHostUuid=other.config.host_uuid)
    assert st >= 400 and not body["success"], body
    assert await _refs(e) == refs and await _adds_up(e) == caps
    assert exists(vol["installPath"])
    row = await e.core.db.fetchone("SELECT status, installPath FROM Volume WHERE uuid=?", (vol["uuid"],))
    assert row["status"] == "Ready" and row["installPath"] == vol["installPath"]
    # the volume is still usable on its host
    await e.call("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=vol["uuid"])
