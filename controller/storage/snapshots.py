"""Volume snapshots on local storage: CreateVolumeSnapshot, RevertVolumeFromSnapshot, DeleteVolumeSnapshot.

CreateVolumeSnapshot works on a volume whose VM is Running (a LIVE snapshot: the agent switches the running
disk to the new overlay, the VM keeps running; ZStack 1.0's ``capability:liveSnapshot``) or Stopped, or on a
detached data volume (offline). Any other VM state (Starting, Stopping, Migrating, Unknown...) is refused
with VM.1010. Revert and delete stay offline: the VM must be Stopped (1.0 required that for revert too).
The volume's ``installPath`` never changes (see ``storage.snapshots``). Fields: ``treeUuid`` (one tree per volume),
``parentUuid`` (the snapshot the new one was taken on top of), ``latest`` (the snapshot the volume's active
layer currently sits on). Every snapshot has a ``LocalStorageResourceRef`` (VolumeSnapshotVO, its file's
allocated size) on the volume's host; its capacity is taken at creation and returned at deletion.
"""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Description, Name, Uuid, UuidDeleteMessage, UuidMessage
from controller.api.registry import api, by_uuid
from controller.errors import AgentFailure, OperationError, StateConflict
from controller.storage import capacity
from controller.storage.common import located
from controller.util import new_uuid, now_iso
from kvmagent.contract import storage as sc


class CreateVolumeSnapshotMsg(ApiMessage):
    volumeUuid: Uuid
    name: Name
    description: Description | None = None
    resourceUuid: Uuid | None = None


async def _ready_volume(ctx: ApiContext, volume_uuid: str, field: str, api_name: str
                        ) -> tuple[dict[str, Any], str | None]:
    """The Ready volume and the state of its VM (None when detached or the VM row is gone)."""
    volume = await ctx.require("Volume", volume_uuid, field)
    if volume["status"] != "Ready":
        raise OperationError(f"volume[uuid:{volume_uuid}] is {volume['status']}; {api_name} needs a Ready volume")
    if not volume["vmInstanceUuid"]:
        return volume, None
    vm = await ctx.db.fetchone("SELECT state FROM VmInstance WHERE uuid=?", (volume["vmInstanceUuid"],))
    return volume, (vm["state"] if vm is not None else None)


async def offline_volume(ctx: ApiContext, volume_uuid: str, field: str, api_name: str, why: str = "") -> dict[str, Any]:
    """The Ready volume, after checking nothing runs on it (its VM Stopped or the volume detached)."""
    volume, state = await _ready_volume(ctx, volume_uuid, field, api_name)
    if state is not None and state != "Stopped":
        raise StateConflict(f"volume[uuid:{volume_uuid}] is used by vm[uuid:{volume['vmInstanceUuid']}] "
                            f"in state {state}; {api_name} needs the vm Stopped{why}", code="VM.1010")
    return volume


async def snapshot_target(ctx: ApiContext, volume_uuid: str) -> dict[str, Any]:
    """The Ready volume, when it may be snapshotted: its VM Running (live) or Stopped, or the volume
    detached (offline). Any other VM state: VM.1010 naming it."""
    volume, state = await _ready_volume(ctx, volume_uuid, "volumeUuid", "CreateVolumeSnapshot")
    if state in (None, "Stopped", "Running"):
        return volume
    raise StateConflict(f"volume[uuid:{volume_uuid}] is used by vm[uuid:{volume['vmInstanceUuid']}] in state "
                        f"{state}; CreateVolumeSnapshot needs the vm Running (live snapshot) or Stopped",
                        code="VM.1010")


@api("CreateVolumeSnapshot", CreateVolumeSnapshotMsg, job=True, queue=lambda m: m.volumeUuid)
async def create_volume_snapshot(ctx: ApiContext, msg: CreateVolumeSnapshotMsg) -> dict[str, Any]:
    """Snapshot of a volume: live when its VM is Running, offline when Stopped or the volume is detached."""
    volume = await snapshot_target(ctx, msg.volumeUuid)
    host, ps = await located(ctx.core, volume)
    latest = await ctx.db.fetchone("SELECT * FROM VolumeSnapshot WHERE volumeUuid=? AND latest=1", (volume["uuid"],))
    uuid = msg.resourceUuid or new_uuid()
    agents = ctx.core.services["agents"]
    try:
        # The VM uuid goes along whenever the volume is attached: the agent takes the live path exactly
        # when the domain runs on that host, whatever the row said a moment ago.
        vm_uuid = volume["vmInstanceUuid"] or None
        reply = await agents.call(host, sc.CreateSnapshotCmd(
            storagePath=ps["url"], volumePath=volume["installPath"], snapshotUuid=uuid, vmUuid=vm_uuid,
            volumeUuid=volume["uuid"] if vm_uuid else None), timeout=600)
    except AgentFailure as e:
        if (e.cause or {}).get("code") != LIVE_UNSUPPORTED:
            raise
        raise StateConflict(f"host[uuid:{host['uuid']}] cannot snapshot volume[uuid:{volume['uuid']}] of the running "
                            f"vm[uuid:{vm_uuid}] live (no capability:liveSnapshot); stop the vm first", code="VM.1010",
                            cause=e.cause) from e
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


#: The agent's error code when its hypervisor cannot take live snapshots.
LIVE_UNSUPPORTED = "VM.LIVE_SNAPSHOT_UNSUPPORTED"

#: Why revert and delete need the VM stopped (the message of their VM.1010).
OFFLINE_ONLY = {
    "RevertVolumeFromSnapshot": " (as in ZStack 1.0: stop the vm, revert, start it again)",
    "DeleteVolumeSnapshot": " (the snapshot is merged into its children offline)",
}


async def _snapshot(ctx: ApiContext, uuid: str, api_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    snap = await ctx.require("VolumeSnapshot", uuid, "uuid")
    volume = await offline_volume(ctx, snap["volumeUuid"], "uuid", api_name, OFFLINE_ONLY[api_name])
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
