"""``CreateDataVolumeFromVolumeTemplate`` and ``CreateDataVolumeFromVolumeSnapshot`` (1.0): new data volumes
holding a DataVolumeTemplate image, or the content of a snapshot.

CreateDataVolumeFromVolumeSnapshot (``volumeSnapshotUuid``, name, description, ``primaryStorageUuid``): the
snapshot must be Ready; on local storage the new volume is created on the host and storage that hold the
snapshot (a given primaryStorageUuid must be that one, else 400): ``/localstorage/volume/createfromsnapshot``
flattens the snapshot with its backing chain into one qcow2 (its own file, no link to the snapshot); capacity is
taken first for the snapshot's volume size and corrected to the real one; any failure deletes the row and
returns the capacity.

CreateDataVolumeFromVolumeTemplate:

* ``imageUuid`` must be a DataVolumeTemplate image that is Ready and Enabled; ``primaryStorageUuid`` a
  LocalStorage that is Enabled and Connected; ``hostUuid`` (mandatory on local storage, as in 1.0) a Connected
  host of a cluster the storage is attached to. Otherwise 400/404/409 naming the field, nothing written.
* One transaction writes the volume (``NotInstantiated``, size = the image's virtual size,
  ``rootImageUuid`` = the image) with its LocalStorageResourceRef and takes the capacity on that host; then
  the host caches the image from its backup storage (``/localstorage/image/download``, md5 checked) and
  creates the volume from the cache (``/localstorage/volume/createfromcache``, type Data): ``Ready`` with its
  installPath. Any failure deletes the row and returns the capacity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name, Uuid
from controller.api.registry import api
from controller.backup.cache import cache_source
from controller.errors import InvalidArgument, OperationError
from controller.resources.common import create_row
from controller.storage import capacity
from controller.storage.common import connected_host
from controller.util import now_iso
from kvmagent.contract import storage as sc


async def _instantiate(ctx: ApiContext, row: dict[str, Any], ps: dict[str, Any], host: dict[str, Any],
                       make: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """Run ``make`` (the agent calls that create the bits of the NotInstantiated volume ``row``): on any failure
    the row goes and its capacity is returned; on success the volume is Ready with the reply's path and sizes,
    the capacity corrected to the real size."""
    try:
        reply = await make()
    except BaseException:
        async with ctx.db.write() as tx:
            await capacity.remove_resource(tx, row["uuid"])
            await tx.execute("DELETE FROM Volume WHERE uuid=?", (row["uuid"],))
        raise
    async with ctx.db.write() as tx:
        await tx.update("Volume", {"uuid": row["uuid"]}, {
            "installPath": reply.installPath, "size": reply.size, "actualSize": reply.actualSize,
            "status": "Ready", "lastOpDate": now_iso()})
        await capacity.resize_resource(tx, row["uuid"], int(reply.size))
        await capacity.record_host(tx, ps["uuid"], host["uuid"], reply)
    return {"inventory": await ctx.inventory("Volume", row["uuid"])}


class CreateDataVolumeFromVolumeTemplateMsg(CreateMessage):
    imageUuid: Uuid
    name: Name
    description: Description | None = None
    primaryStorageUuid: Uuid
    hostUuid: Uuid | None = None


@api("CreateDataVolumeFromVolumeTemplate", CreateDataVolumeFromVolumeTemplateMsg, job=True)
async def create_data_volume_from_template(ctx: ApiContext,
                                           msg: CreateDataVolumeFromVolumeTemplateMsg) -> dict[str, Any]:
    """A data volume created on a host's local storage from a DataVolumeTemplate image."""
    image = dict(await ctx.require("Image", msg.imageUuid, "imageUuid", vo="ImageVO"))
    if image["mediaType"] != "DataVolumeTemplate":
        raise InvalidArgument(f"invalid field[imageUuid]: image[uuid:{image['uuid']}] is a {image['mediaType']}; "
                              "only a DataVolumeTemplate image can become a data volume")
    if image["status"] != "Ready" or image["state"] != "Enabled":
        raise OperationError(f"image[uuid:{image['uuid']}] is {image['status']}/{image['state']}; it must be "
                             "Ready and Enabled")
    ps = dict(await ctx.require("PrimaryStorage", msg.primaryStorageUuid, "primaryStorageUuid"))
    if ps["type"] != "LocalStorage":
        raise InvalidArgument(f"invalid field[primaryStorageUuid]: primary storage[uuid:{ps['uuid']}] is "
                              f"{ps['type']}; only LocalStorage is supported")
    if ps["state"] != "Enabled" or ps["status"] != "Connected":
        raise OperationError(f"primary storage[uuid:{ps['uuid']}] is {ps['state']}/{ps['status']}; it must be "
                             "Enabled and Connected")
    if not msg.hostUuid:
        raise InvalidArgument("invalid field[hostUuid]: it is mandatory when the primary storage is LocalStorage "
                              "(the host whose disk gets the volume)")
    await ctx.require("Host", msg.hostUuid, "hostUuid")
    host = await connected_host(ctx.core, msg.hostUuid)
    if not await ctx.db.fetchone("SELECT 1 FROM PrimaryStorageClusterRef WHERE primaryStorageUuid=? AND "
                                 "clusterUuid=?", (ps["uuid"], host["clusterUuid"])):
        raise InvalidArgument(f"invalid field[hostUuid]: host[uuid:{host['uuid']}] is in cluster"
                              f"[uuid:{host['clusterUuid']}], to which primary storage[uuid:{ps['uuid']}] is not "
                              "attached")
    size = int(image["size"])

    async def take(tx: Any, row: dict[str, Any]) -> None:
        await capacity.add_resource(tx, ps["uuid"], host["uuid"], row["uuid"], "VolumeVO", size)

    row = await create_row(ctx, "Volume", "VolumeVO", msg, {
        "name": msg.name, "description": msg.description, "primaryStorageUuid": ps["uuid"], "type": "Data",
        "format": "qcow2", "size": size, "rootImageUuid": image["uuid"], "status": "NotInstantiated",
        "state": "Enabled"}, after=take)
    agents = ctx.core.services["agents"]

    async def make() -> Any:
        src = await cache_source(ctx.core, image, zone_uuid=host["zoneUuid"])
        await agents.call(host, sc.DownloadImageCmd(storagePath=ps["url"], imageUuid=image["uuid"],
                                                    format=image["format"], **src), timeout=1800)
        account = ctx.session.accountUuid if ctx.session else row["uuid"]
        return await agents.call(host, sc.CreateVolumeFromCacheCmd(
            storagePath=ps["url"], accountUuid=account, volumeUuid=row["uuid"], volumeType="Data",
            imageUuid=image["uuid"]), timeout=600)

    return await _instantiate(ctx, row, ps, host, make)


class CreateDataVolumeFromVolumeSnapshotMsg(CreateMessage):
    volumeSnapshotUuid: Uuid
    name: Name
    description: Description | None = None
    primaryStorageUuid: Uuid | None = None


@api("CreateDataVolumeFromVolumeSnapshot", CreateDataVolumeFromVolumeSnapshotMsg, job=True,
     queue=lambda m: m.volumeSnapshotUuid)
async def create_data_volume_from_snapshot(ctx: ApiContext,
                                           msg: CreateDataVolumeFromVolumeSnapshotMsg) -> dict[str, Any]:
    """A data volume holding the content of a snapshot, on the host and storage of that snapshot."""
    snap = dict(await ctx.require("VolumeSnapshot", msg.volumeSnapshotUuid, "volumeSnapshotUuid",
                                  vo="VolumeSnapshotVO"))
    if snap["status"] != "Ready" or not snap["primaryStorageInstallPath"]:
        raise OperationError(f"volume snapshot[uuid:{snap['uuid']}] is {snap['status']}; only a Ready snapshot "
                             "can become a data volume")
    ref = await ctx.db.fetchone("SELECT * FROM LocalStorageResourceRef WHERE resourceUuid=?", (snap["uuid"],))
    if ref is None:
        raise OperationError(f"volume snapshot[uuid:{snap['uuid']}] is not on local storage")
    if msg.primaryStorageUuid and msg.primaryStorageUuid != ref["primaryStorageUuid"]:
        raise InvalidArgument(f"invalid field[primaryStorageUuid]: the snapshot is on the local storage"
                              f"[uuid:{ref['primaryStorageUuid']}] of host[uuid:{ref['hostUuid']}]; a volume "
                              "from it is created there")
    ps = dict(await ctx.require("PrimaryStorage", ref["primaryStorageUuid"], "primaryStorageUuid"))
    host = await connected_host(ctx.core, ref["hostUuid"])
    volume = await ctx.db.fetchone("SELECT size FROM Volume WHERE uuid=?", (snap["volumeUuid"],))
    size = int(volume["size"]) if volume else int(snap["size"])

    async def take(tx: Any, row: dict[str, Any]) -> None:
        await capacity.add_resource(tx, ps["uuid"], host["uuid"], row["uuid"], "VolumeVO", size)

    row = await create_row(ctx, "Volume", "VolumeVO", msg, {
        "name": msg.name, "description": msg.description, "primaryStorageUuid": ps["uuid"], "type": "Data",
        "format": "qcow2", "size": size, "status": "NotInstantiated", "state": "Enabled"}, after=take)

    async def make() -> Any:
        account = ctx.session.accountUuid if ctx.session else row["uuid"]
        return await ctx.core.services["agents"].call(host, sc.CreateVolumeFromSnapshotCmd(
            storagePath=ps["url"], accountUuid=account, volumeUuid=row["uuid"], volumeType="Data",
            snapshotPath=snap["primaryStorageInstallPath"]), timeout=3600)

    return await _instantiate(ctx, row, ps, host, make)
