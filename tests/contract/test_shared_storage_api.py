"""Shared primary storage (NFS, SharedMountPoint; issue 15) against the controller and two real in-process agents
(libvirt test driver). Both agents run on this machine, so a directory here is a SharedMountPoint both "hosts" see.

Bad input to AddNfsPrimaryStorage / AddSharedMountPointPrimaryStorage names the field, the value and what is
allowed, and changes nothing. Attached to the cluster (the local storage detached first), every host connects it
(the first writes the marker) and the storage has the file system's capacity; VMs get their root volume, data
volume and snapshot under its path with one capacity for the storage (taken once, returned once); a stopped VM
starts on either host; a VM with a snapshot there is a migration candidate (nothing to copy); a host that does not
see the marker (another file system at that path) fails its connect naming the url and the host; detach forgets
the hosts. The NFS mount itself cannot run here (no nfs module in the lab kernel): it is tested at unit level,
tests/unit/test_shared_storage_mount.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import test_controller_compute as tcc
from test_controller_compute import Env

env = tcc.env  # a controller, two connected in-process agents, a local PS attached to the cluster

MiB = 1 << 20


async def _rows(e: Env, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await e.core.db.fetchall(sql, args)]


async def _ps(e: Env, uuid: str) -> dict[str, Any]:
    return (await e.call("QueryPrimaryStorage", conditions=[{"name": "uuid", "op": "=", "value": uuid}])
            )["inventories"][0]


async def _refused(e: Env, api: str, params: dict[str, Any], status: int, code: str, *words: str) -> None:
    before = await _rows(e, "SELECT * FROM PrimaryStorage ORDER BY uuid")
    st, body = await e.raw(api, **params)
    assert st == status and body["error"]["code"] == code, body
    assert all(w in body["error"]["details"] for w in words), body
    assert await _rows(e, "SELECT * FROM PrimaryStorage ORDER BY uuid") == before


async def test_bad_input_changes_nothing(env: Env, tmp_path: Path) -> None:
    e = env
    zone = e.ids["zone"]
    for url in ("/storage/nfs", "nfs-server", "10.0.0.5:/a/../b", "-o:/x", "10.0.0.5:relative"):
        await _refused(e, "AddNfsPrimaryStorage", {"name": "n", "zoneUuid": zone, "url": url}, 400, "SYS.1007",
                       "url", "host:/absolute/path")
    for url in ("relative/dir", "/", "/a/../b", "/a b"):
        await _refused(e, "AddSharedMountPointPrimaryStorage", {"name": "s", "zoneUuid": zone, "url": url}, 400,
                       "SYS.1007", "url", "absolute directory path")
    unknown = "0" * 32
    await _refused(e, "AddSharedMountPointPrimaryStorage", {"name": "s", "zoneUuid": unknown, "url": "/x/y"}, 404,
                   "SYS.1003", "zoneUuid", unknown)
    nfs = await e.inv("AddNfsPrimaryStorage", name="nfs", zoneUuid=zone, url="192.168.0.220:/storage/nfs/")
    assert (nfs["type"], nfs["url"], nfs["mountPath"]) == (
        "NFS", "192.168.0.220:/storage/nfs", f"/opt/zstack/nfsprimarystorage/prim-{nfs['uuid']}")
    assert (nfs["totalCapacity"], nfs["availableCapacity"]) == (0, 0)
    await _refused(e, "AddNfsPrimaryStorage", {"name": "again", "zoneUuid": zone, "url": "192.168.0.220:/storage/nfs"},
                   400, "SYS.1007", "url", "192.168.0.220:/storage/nfs", nfs["uuid"], zone)
    # attached, every host mounts it: the lab kernel has no nfs, so the real mount fails on the first host and
    # the attach fails naming the url and the host, undone; no mount point is left
    loop = await e.inv("AddNfsPrimaryStorage", name="loop", zoneUuid=zone, url="127.0.0.1:/export")
    st, body = await e.raw("AttachPrimaryStorageToCluster", primaryStorageUuid=loop["uuid"],
                           clusterUuid=e.ids["cluster"])
    text = json.dumps(body)
    assert st >= 400 and "127.0.0.1:/export" in text and "cannot mount NFS" in text, body
    assert any(h["uuid"] in text for h in await e.hosts()), body
    assert await _rows(e, "SELECT * FROM PrimaryStorageClusterRef WHERE primaryStorageUuid=?", loop["uuid"]) == []
    assert await _rows(e, "SELECT * FROM SharedStorageHostRef") == []
    assert not Path(loop["mountPath"]).exists()  # noqa: ASYNC240
    await e.call("DeletePrimaryStorage", uuid=loop["uuid"])
    types = (await e.call("GetPrimaryStorageTypes"))["primaryStorageTypes"]
    assert {"NFS", "SharedMountPoint"} <= set(types)


async def test_vms_on_shared_mount_point(env: Env, tmp_path: Path) -> None:
    e = env
    cluster = e.ids["cluster"]
    local = (await e.call("QueryPrimaryStorage", conditions=[{"name": "type", "op": "=", "value": "LocalStorage"}])
             )["inventories"][0]["uuid"]
    await e.call("DetachPrimaryStorageFromCluster", primaryStorageUuid=local, clusterUuid=cluster)
    smp_dir = tmp_path / "smp"
    ps = await e.inv("AddSharedMountPointPrimaryStorage", name="smp", zoneUuid=e.ids["zone"], url=f"{smp_dir}/")
    assert (ps["type"], ps["url"], ps["mountPath"]) == ("SharedMountPoint", str(smp_dir), str(smp_dir))
    await _refused(e, "AddSharedMountPointPrimaryStorage", {"name": "dup", "zoneUuid": e.ids["zone"],
                                                             "url": str(smp_dir)}, 400, "SYS.1007", str(smp_dir))
    # the directory does not exist on the hosts yet: the attach fails naming the url and the host, and is undone
    st, body = await e.raw("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cluster)
    assert st >= 400 and str(smp_dir) in body["error"]["details"] and "does not exist" in str(body), body
    assert await _rows(e, "SELECT * FROM PrimaryStorageClusterRef WHERE primaryStorageUuid=?", ps["uuid"]) == []
    assert await _rows(e, "SELECT * FROM SharedStorageHostRef") == []
    smp_dir.mkdir()
    await e.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cluster)
    hosts = sorted(h["uuid"] for h in await e.hosts())
    assert sorted(r["hostUuid"] for r in await _rows(e, "SELECT hostUuid FROM SharedStorageHostRef")) == hosts
    marker = json.loads((smp_dir / ".zstack-ps.json").read_text())
    assert marker["primaryStorageUuid"] == ps["uuid"] and marker["shared"] is True
    ps = await _ps(e, ps["uuid"])
    assert ps["totalCapacity"] > 0 and ps["availableCapacity"] == ps["totalCapacity"], ps
    total = ps["totalCapacity"]

    # a VM: root volume under the shared path, one capacity for the storage, no local-storage ref
    st, body = await e.create_vm("vm-smp")
    assert st == 200, body
    vm = body["inventory"]
    root = (await e.call("QueryVolume", conditions=[{"name": "uuid", "op": "=", "value": vm["rootVolumeUuid"]}])
            )["inventories"][0]
    assert root["installPath"].startswith(f"{smp_dir}/rootVolumes/") and root["primaryStorageUuid"] == ps["uuid"]
    assert Path(root["installPath"]).is_file()  # noqa: ASYNC240
    assert await _rows(e, "SELECT * FROM LocalStorageResourceRef") == []
    assert (await _ps(e, ps["uuid"]))["availableCapacity"] == total - root["size"]
    # a data volume attached to the running VM: created there too
    off = await e.inv("CreateDiskOffering", name="d", diskSize=32 * MiB)
    data = await e.inv("CreateDataVolume", name="data", diskOfferingUuid=off["uuid"])
    data = await e.inv("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=data["uuid"])
    assert data["installPath"].startswith(f"{smp_dir}/dataVolumes/") and data["status"] == "Ready", data
    assert (await _ps(e, ps["uuid"]))["availableCapacity"] == total - root["size"] - 32 * MiB
    # stopped: a snapshot of the root volume on the shared storage, then the VM starts on the OTHER host
    src = vm["hostUuid"]
    other = next(h for h in hosts if h != src)
    await e.call("StopVmInstance", uuid=vm["uuid"])
    snap = await e.inv("CreateVolumeSnapshot", volumeUuid=root["uuid"], name="s1")
    assert snap["primaryStorageInstallPath"].startswith(f"{smp_dir}/rootVolumes/"), snap
    used = root["size"] + 32 * MiB + snap["size"]
    assert (await _ps(e, ps["uuid"]))["availableCapacity"] == total - used
    await e.call("ChangeHostState", uuid=src, stateEvent="disable")  # the allocator must take the other host
    started = await e.inv("StartVmInstance", uuid=vm["uuid"])
    assert (started["state"], started["hostUuid"]) == ("Running", other), started
    await e.call("ChangeHostState", uuid=src, stateEvent="enable")
    # migration: the source host is the only candidate (nothing to copy, the snapshot stays where it is)
    cands = (await e.call("GetVmMigrationCandidateHosts", vmInstanceUuid=vm["uuid"]))["inventories"]
    assert [h["uuid"] for h in cands] == [src], cands
    # a host that does not see the marker (another file system at that path) fails its connect, saying so
    (smp_dir / ".zstack-ps.json").rename(tmp_path / "marker.away")
    st, body = await e.raw("ReconnectHost", uuid=src)
    assert st >= 400, body
    text = json.dumps(body)
    assert str(smp_dir) in text and src in text and "does not see the same shared file system" in text, body
    assert not (smp_dir / ".zstack-ps.json").exists()  # a later host never writes the marker
    (tmp_path / "marker.away").rename(smp_dir / ".zstack-ps.json")
    await e.call("ReconnectHost", uuid=src)
    assert (await e.call("QueryHost", conditions=[{"name": "uuid", "op": "=", "value": src}])
            )["inventories"][0]["status"] == "Connected"
    # destroyed for good: every byte returned exactly once
    await e.call("DetachDataVolumeFromVm", uuid=data["uuid"])
    await e.call("DeleteDataVolume", uuid=data["uuid"])
    await e.call("ExpungeDataVolume", uuid=data["uuid"])
    await e.call("DestroyVmInstance", uuid=vm["uuid"])
    await e.call("ExpungeVmInstance", uuid=vm["uuid"])
    assert await _rows(e, "SELECT * FROM SharedStorageResourceRef") == []
    assert (await _ps(e, ps["uuid"]))["availableCapacity"] == total
    assert not Path(root["installPath"]).exists()  # noqa: ASYNC240
    # detached: the hosts forget it
    await e.call("DetachPrimaryStorageFromCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cluster)
    assert await _rows(e, "SELECT * FROM SharedStorageHostRef") == []
    # attached again (the marker stayed: the first host finds it, the second too), then deleted Enforcing
    await e.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cluster)
    assert len(await _rows(e, "SELECT * FROM SharedStorageHostRef")) == 2
    await e.call("DeletePrimaryStorage", uuid=ps["uuid"], deleteMode="Enforcing")
    assert await _rows(e, "SELECT * FROM SharedStorageHostRef") == []
    assert await _rows(e, "SELECT * FROM PrimaryStorage WHERE uuid=?", ps["uuid"]) == []
