"""Data volumes on local primary storage: CreateDataVolume, AttachDataVolumeToVm, DetachDataVolumeFromVm
(reference §3.5, 1.0 behaviour).

Guarantees:

* A new data volume is ``NotInstantiated`` (no bits, no capacity) until it is first attached; then it is
  created on the host of the VM's root volume (``/localstorage/volume/createempty``) with its
  ``LocalStorageResourceRef`` and capacity, and stays on that host (attaching it to a VM elsewhere is refused;
  ``LocalStorageMigrateVolume`` moves it).
* Attach/detach of a Running VM is live (``/vm/volume/attach|detach``); a failing live attach leaves the
  volume detached (a volume instantiated by that attach stays Ready on the host). A live detach the guest
  never completes fails (409 ``VOLUME.DETACH_TIMEOUT`` naming volume and VM) and the volume stays attached.
* DeleteDataVolume with its deletion policies, RecoverDataVolume and ExpungeDataVolume are in ``deletion.py``
  (they use :func:`detach`, :func:`delete_bits` and :func:`forget`); a Deleted volume cannot be attached.
"""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, CreateMessage, Description, Name, Uuid, UuidMessage
from controller.api.registry import api, by_uuid
from controller.core import Controller
from controller.errors import AgentFailure, InvalidArgument, OperationError, StateConflict
from controller.resources.common import create_row
from controller.storage import capacity, shared
from controller.storage.common import connected_host, located, ps_row, shared_located, volume_ref
from controller.util import new_uuid, now_iso
from kvmagent.contract import storage as sc
from kvmagent.contract import vm as vc

VM_ATTACH_STATES = ("Running", "Stopped")


class CreateDataVolumeMsg(CreateMessage):
    name: Name
    description: Description | None = None
    diskOfferingUuid: Uuid
    primaryStorageUuid: Uuid | None = None


class AttachDataVolumeMsg(ApiMessage):
    vmInstanceUuid: Uuid
    volumeUuid: Uuid


async def _inv(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    return {"inventory": await ctx.inventory("Volume", uuid)}


@api("CreateDataVolume", CreateDataVolumeMsg)
async def create_data_volume(ctx: ApiContext, msg: CreateDataVolumeMsg) -> dict[str, Any]:
    """A data volume record of the offering's size; instantiated on a host when first attached."""
    offering = await ctx.require("DiskOffering", msg.diskOfferingUuid, "diskOfferingUuid")
    if offering["state"] != "Enabled":
        raise OperationError(f"disk offering[uuid:{offering['uuid']}] is {offering['state']}; enable it first")
    if msg.primaryStorageUuid:
        ps = await ctx.require("PrimaryStorage", msg.primaryStorageUuid, "primaryStorageUuid")
        if ps["type"] != "LocalStorage" and not shared.is_shared_type(ps["type"]):
            raise InvalidArgument(f"invalid field[primaryStorageUuid]: primary storage[uuid:{ps['uuid']}] is "
                                  f"{ps['type']}; allowed: LocalStorage, NFS, SharedMountPoint")
    row = await create_row(ctx, "Volume", "VolumeVO", msg, {
        "name": msg.name, "description": msg.description, "diskOfferingUuid": offering["uuid"],
        "primaryStorageUuid": msg.primaryStorageUuid, "type": "Data", "format": "qcow2",
        "size": offering["diskSize"], "status": "NotInstantiated", "state": "Enabled"})
    return await _inv(ctx, row["uuid"])


async def instantiate(core: Controller, volume: dict[str, Any], host: dict[str, Any], ps: dict[str, Any],
                      account_uuid: str) -> dict[str, Any]:
    """Create the empty volume on ``host`` (capacity first; returned if the agent fails); the updated row."""
    async with core.db.write() as tx:
        await capacity.add_resource(tx, ps["uuid"], host["uuid"], volume["uuid"], "VolumeVO", int(volume["size"]))
    try:
        reply = await core.services["agents"].call(host, sc.CreateEmptyVolumeCmd(
            storagePath=ps["url"], accountUuid=account_uuid, volumeUuid=volume["uuid"], volumeType="Data",
            size=int(volume["size"])), timeout=600)
    except BaseException:
        async with core.db.write() as tx:
            await capacity.remove_resource(tx, volume["uuid"])
        raise
    values = {"installPath": reply.installPath, "actualSize": reply.actualSize, "status": "Ready",
              "primaryStorageUuid": ps["uuid"], "lastOpDate": now_iso()}
    async with core.db.write() as tx:
        await tx.update("Volume", {"uuid": volume["uuid"]}, values)
    return {**volume, **values}


async def root_location(ctx: ApiContext, vm: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(host, PS) of the VM's root volume: where its data volumes must live."""
    ref = await volume_ref(ctx.core, vm["rootVolumeUuid"])
    root = await ctx.db.fetchone("SELECT * FROM Volume WHERE uuid=?", (vm["rootVolumeUuid"],))
    if ref is None and root is not None and root["installPath"] and await shared.is_shared(
            ctx.db, root["primaryStorageUuid"]):
        return await shared_located(ctx.core, dict(root))  # the vm's host (or one that has the storage connected)
    if ref is None:
        raise OperationError(f"the root volume of vm[uuid:{vm['uuid']}] is not on local storage yet; start the "
                             "vm once before attaching data volumes")
    return await connected_host(ctx.core, ref["hostUuid"]), await ps_row(ctx.core, ref["primaryStorageUuid"])


def volume_to(volume: dict[str, Any], core: Controller) -> vc.VolumeTO:
    return vc.VolumeTO(path=volume["installPath"], format="qcow2", uuid=volume["uuid"],
                       deviceId=int(volume["deviceId"] or 1),
                       cacheMode=core.services["configs"].get("kvm", "vm.cacheMode"))


async def _check_attach(ctx: ApiContext, vm: dict[str, Any], volume: dict[str, Any]) -> None:
    if volume["type"] != "Data":
        raise InvalidArgument(f"volume[uuid:{volume['uuid']}] is a {volume['type']} volume; only data volumes "
                              "can be attached")
    if volume["vmInstanceUuid"]:
        raise OperationError(f"data volume[uuid:{volume['uuid']}] has been attached to "
                             f"vm[uuid:{volume['vmInstanceUuid']}]")
    if volume["status"] not in ("Ready", "NotInstantiated") or volume["state"] != "Enabled":
        raise OperationError(f"data volume[uuid:{volume['uuid']}] is {volume['status']}/{volume['state']}; it "
                             "can be attached only when Ready or NotInstantiated and Enabled")
    if vm["state"] not in VM_ATTACH_STATES:
        raise StateConflict(f"vm[uuid:{vm['uuid']}] is {vm['state']}; data volumes can be attached only to a "
                            f"vm in state {list(VM_ATTACH_STATES)}", code="VM.1010")


async def _next_device(ctx: ApiContext, vm_uuid: str) -> int:
    row = await ctx.db.fetchone("SELECT COALESCE(MAX(deviceId), 0) FROM Volume WHERE vmInstanceUuid=?", (vm_uuid,))
    return int(row[0]) + 1 if row else 1


@api("AttachDataVolumeToVm", AttachDataVolumeMsg, job=True, queue=lambda m: m.vmInstanceUuid)
async def attach_data_volume(ctx: ApiContext, msg: AttachDataVolumeMsg) -> dict[str, Any]:
    """Attach a data volume to a Running or Stopped VM on the host of its root volume (live when Running)."""
    vm = await ctx.require("VmInstance", msg.vmInstanceUuid, "vmInstanceUuid")
    volume = await ctx.require("Volume", msg.volumeUuid, "volumeUuid")
    await _check_attach(ctx, vm, volume)
    host, ps = await root_location(ctx, vm)
    ref = await volume_ref(ctx.core, volume["uuid"])
    if ref is not None and ref["hostUuid"] != host["uuid"]:
        raise OperationError(f"the data volume[uuid:{volume['uuid']}] is on the local storage"
                             f"[uuid:{ref['primaryStorageUuid']}] of host[uuid:{ref['hostUuid']}] but the vm"
                             f"[uuid:{vm['uuid']}] is on host[uuid:{host['uuid']}]; migrate the volume with "
                             "LocalStorageMigrateVolume first")
    if volume["primaryStorageUuid"] and volume["primaryStorageUuid"] != ps["uuid"]:
        raise OperationError(f"data volume[uuid:{volume['uuid']}] belongs to primary storage"
                             f"[uuid:{volume['primaryStorageUuid']}] but vm[uuid:{vm['uuid']}] uses "
                             f"[uuid:{ps['uuid']}]")
    if volume["status"] == "NotInstantiated":
        account = ctx.session.accountUuid if ctx.session else new_uuid()
        volume = await instantiate(ctx.core, volume, host, ps, account)
    volume["deviceId"] = await _next_device(ctx, vm["uuid"])
    if vm["state"] == "Running":
        await ctx.core.services["agents"].call(host, vc.AttachVolumeCmd(uuid=vm["uuid"],
                                                                        volume=volume_to(volume, ctx.core)))
    async with ctx.db.write() as tx:
        await tx.update("Volume", {"uuid": volume["uuid"]}, {
            "vmInstanceUuid": vm["uuid"], "deviceId": volume["deviceId"], "lastOpDate": now_iso()})
    return await _inv(ctx, volume["uuid"])


async def detach(ctx: ApiContext, volume: dict[str, Any]) -> None:
    """Detach (live when the VM runs); the row's vmInstanceUuid and deviceId are cleared."""
    vm = await ctx.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (volume["vmInstanceUuid"],))
    if vm is not None and vm["state"] not in ("Running", "Stopped", "Destroyed"):
        raise StateConflict(f"vm[uuid:{vm['uuid']}] is {vm['state']}; data volumes can be detached only from a "
                            "Running or Stopped vm", code="VM.1010")
    if vm is not None and vm["state"] == "Running" and vm["hostUuid"]:
        host = await connected_host(ctx.core, vm["hostUuid"])
        try:
            await ctx.core.services["agents"].call(host, vc.DetachVolumeCmd(uuid=vm["uuid"],
                                                                             volumeUuid=volume["uuid"]))
        except AgentFailure as e:
            if (e.cause or {}).get("code") != "VM.DETACH_TIMEOUT":
                raise
            raise OperationError(f"data volume[uuid:{volume['uuid']}] is still attached to vm[uuid:{vm['uuid']}]: "
                                 f"{e.cause.get('description') if e.cause else e}", code="VOLUME.DETACH_TIMEOUT",
                                 cause=e.cause) from e
    async with ctx.db.write() as tx:
        await tx.update("Volume", {"uuid": volume["uuid"]},
                        {"vmInstanceUuid": None, "deviceId": None, "lastOpDate": now_iso()})


@api("DetachDataVolumeFromVm", UuidMessage, job=True, queue=by_uuid)
async def detach_data_volume(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """Detach a data volume from its VM (live when the VM runs)."""
    volume = await ctx.require("Volume", msg.uuid, "uuid")
    if volume["type"] != "Data":
        raise InvalidArgument(f"volume[uuid:{msg.uuid}] is a {volume['type']} volume; only data volumes can be "
                              "detached")
    if not volume["vmInstanceUuid"]:
        raise OperationError(f"data volume[uuid:{msg.uuid}] is not attached to any vm")
    await detach(ctx, volume)
    return await _inv(ctx, msg.uuid)


async def delete_bits(core: Controller, volume: dict[str, Any]) -> None:
    """Delete the volume's directory (its file and snapshots) on its host."""
    if not volume["installPath"]:
        return
    host, ps = await located(core, volume)
    await core.services["agents"].call(host, sc.DeleteVolumeCmd(storagePath=ps["url"],
                                                                installPath=volume["installPath"]))


async def forget(core: Controller, volume_uuid: str) -> None:
    """One transaction: the volume's and its snapshots' refs (capacity returned) and rows are deleted."""
    async with core.db.write() as tx:
        for s in await tx.fetchall("SELECT uuid FROM VolumeSnapshot WHERE volumeUuid=?", (volume_uuid,)):
            await capacity.remove_resource(tx, s["uuid"])
        await capacity.remove_resource(tx, volume_uuid)
        await tx.execute("DELETE FROM VolumeSnapshot WHERE volumeUuid=?", (volume_uuid,))
        await tx.execute("DELETE FROM Volume WHERE uuid=?", (volume_uuid,))
