"""Volume snapshots on local storage: CreateVolumeSnapshot, RevertVolumeFromSnapshot, DeleteVolumeSnapshot.

The agent takes OFFLINE snapshots only (``storage.snapshots``): the volume's VM must be Stopped, or the data
volume detached. Live snapshots of a running VM are not done. Fields: ``treeUuid`` (one tree per volume),
``parentUuid`` (the snapshot the new one was taken on top of), ``latest`` (the snapshot the volume's active
layer currently sits on). Every snapshot has a ``LocalStorageResourceRef`` (VolumeSnapshotVO, its file's
allocated size) on the volume's host; its capacity is taken at creation and returned at deletion.
"""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Description, Name, Uuid, UuidDeleteMessage, UuidMessage
from controller.api.registry import api, by_uuid
from controller.errors import OperationError, StateConflict
from controller.storage import capacity
from controller.storage.common import located
from controller.util import new_uuid, now_iso
from kvmagent.contract import storage as sc


class CreateVolumeSnapshotMsg(ApiMessage):
    volumeUuid: Uuid
    name: Name
    description: Description | None = None
    resourceUuid: Uuid | None = None


async def offline_volume(ctx: ApiContext, volume_uuid: str, field: str, api_name: str) -> dict[str, Any]:
    """The Ready volume, after checking nothing runs on it (its VM Stopped or the volume detached)."""
    volume = await ctx.require("Volume", volume_uuid, field)
    if volume["status"] != "Ready":
        raise OperationError(f"volume[uuid:{volume_uuid}] is {volume['status']}; {api_name} needs a Ready volume")
    if volume["vmInstanceUuid"]:
        vm = await ctx.db.fetchone("SELECT state FROM VmInstance WHERE uuid=?", (volume["vmInstanceUuid"],))
        if vm is not None and vm["state"] != "Stopped":
            raise StateConflict(f"volume[uuid:{volume_uuid}] is used by vm[uuid:{volume['vmInstanceUuid']}] "
                                f"in state {vm['state']}; {api_name} needs the vm Stopped (live snapshots are "
                                "not supported)", code="VM.1010")
    return volume


@api("CreateVolumeSnapshot", CreateVolumeSnapshotMsg, job=True, queue=lambda m: m.volumeUuid)
async def create_volume_snapshot(ctx: ApiContext, msg: CreateVolumeSnapshotMsg) -> dict[str, Any]:
    """Offline snapshot of a volume (VM Stopped or data volume detached)."""
    volume = await offline_volume(ctx, msg.volumeUuid, "volumeUuid", "CreateVolumeSnapshot")
    host, ps = await located(ctx.core, volume)
    latest = await ctx.db.fetchone("SELECT * FROM VolumeSnapshot WHERE volumeUuid=? AND latest=1", (volume["uuid"],))
    uuid = msg.resourceUuid or new_uuid()
    agents = ctx.core.services["agents"]
    reply = await agents.call(host, sc.CreateSnapshotCmd(storagePath=ps["url"], volumePath=volume["installPath"],
                                                         snapshotUuid=uuid), timeout=600)
    info = await agents.call(host, sc.VolumeInfoCmd(storagePath=ps["url"], installPath=reply.snapshotPath))
    now = now_iso()
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE VolumeSnapshot SET latest=0 WHERE volumeUuid=?", (volume["uuid"],))
        await tx.insert("VolumeSnapshot", {
            "uuid": uuid, "name": msg.name, "description": msg.description, "type": "Hypervisor",
            "volumeUuid": volume["uuid"], "treeUuid": latest["treeUuid"] if latest else new_uuid(),
            "parentUuid": latest["uuid"] if latest else None, "primaryStorageUuid": ps["uuid"],
            "primaryStorageInstallPath": reply.snapshotPath, "volumeType": volume["type"], "format": "qcow2",
            "latest": 1, "size": info.actualSize, "state": "Enabled", "status": "Ready",
            "createDate": now, "lastOpDate": now})
        await capacity.add_resource(tx, ps["uuid"], host["uuid"], uuid, "VolumeSnapshotVO", info.actualSize,
                                    force=True)
    return {"inventory": await ctx.inventory("VolumeSnapshot", uuid)}


async def _snapshot(ctx: ApiContext, uuid: str, api_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    snap = await ctx.require("VolumeSnapshot", uuid, "uuid")
    volume = await offline_volume(ctx, snap["volumeUuid"], "uuid", api_name)
    return snap, volume


@api("RevertVolumeFromSnapshot", UuidMessage, job=True, queue=by_uuid)
async def revert_volume(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """The volume's content becomes the snapshot's (the current top is discarded); VM must be Stopped."""
    snap, volume = await _snapshot(ctx, msg.uuid, "RevertVolumeFromSnapshot")
    host, ps = await located(ctx.core, volume)
    await ctx.core.services["agents"].call(host, sc.RevertSnapshotCmd(
        storagePath=ps["url"], volumePath=volume["installPath"], snapshotPath=snap["primaryStorageInstallPath"]),
        timeout=600)
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE VolumeSnapshot SET latest=(uuid=?), lastOpDate=? WHERE volumeUuid=?",
                         (snap["uuid"], now_iso(), volume["uuid"]))
    return {"inventory": await ctx.inventory("VolumeSnapshot", snap["uuid"])}


@api("DeleteVolumeSnapshot", UuidDeleteMessage, job=True, queue=by_uuid)
async def delete_volume_snapshot(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a snapshot (merged into its children by the agent); its capacity is returned."""
    row = await ctx.db.fetchone("SELECT * FROM VolumeSnapshot WHERE uuid=?", (msg.uuid,))
    if row is None:
        return {}
    snap, volume = await _snapshot(ctx, msg.uuid, "DeleteVolumeSnapshot")
    host, ps = await located(ctx.core, volume)
    await ctx.core.services["agents"].call(host, sc.DeleteSnapshotCmd(
        storagePath=ps["url"], volumePath=volume["installPath"], snapshotPath=snap["primaryStorageInstallPath"]),
        timeout=1800)
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE VolumeSnapshot SET parentUuid=?, lastOpDate=? WHERE parentUuid=?",
                         (snap["parentUuid"], now_iso(), snap["uuid"]))
        if snap["latest"] and snap["parentUuid"]:
            await tx.execute("UPDATE VolumeSnapshot SET latest=1 WHERE uuid=?", (snap["parentUuid"],))
        await capacity.remove_resource(tx, snap["uuid"])
        await tx.execute("DELETE FROM VolumeSnapshot WHERE uuid=?", (snap["uuid"],))
    return {}
