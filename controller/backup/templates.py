"""Images from volumes and snapshots (1.0): ``CreateRootVolumeTemplateFromRootVolume``,
``CreateRootVolumeTemplateFromVolumeSnapshot``, ``CreateDataVolumeTemplateFromVolume``.

Steps (the API waits for them as a job): check the message → pick the backup storages (1.0: the given ones
that are Connected and Enabled and attached to the volume's zone; when none are given, every such storage of
that zone) → ONE transaction writes the image (``Creating``, ``downloadProgress`` 0) and one
ImageBackupStorageRef per storage (``Downloading``, ``<bs url>/images/<uuid>/<uuid>.qcow2``) → for each
storage the host holding the volume flattens the source with its backing chain into one qcow2 and uploads it
over SFTP (``/localstorage/export``: ``.partial`` then renamed; md5 computed on the host) while the controller
reads the partial file's size on the storage for ``downloadProgress`` (percent of the source's virtual size,
at most once a second) → on each storage the file's md5 is recomputed (``md5sum``) and compared with the
host's, and ``qemu-img info`` checks it is a self-contained qcow2 (as AddImage does) → image and refs
``Ready`` (size = virtual size, actualSize, md5Sum), storage capacities re-measured. Any failure deletes
the image row, its refs and the files on every storage.

Source of the bits:

* a root volume of a Stopped VM (or a detached data volume): the volume file itself (nothing runs on it);
* a root volume of a Running VM — which 1.0 refused (Stopped only) and ZStack-Py allows: first a LIVE snapshot
  through CreateVolumeSnapshot's own path (a real snapshot named ``for image <image uuid>``, kept, visible in
  the snapshot tree), then that snapshot's file, which holds the disk as it was at that instant;
* a snapshot: its file.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import asyncssh
from pydantic import Field

from controller import sealed
from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name, Uuid
from controller.api.registry import api
from controller.backup.cache import sftp_url
from controller.backup.images import _roll_back
from controller.backup.inspect import inspect_remote
from controller.backup.sftp import BackupStorageError, Endpoint, connect, execute
from controller.backup.storage import refresh_capacity
from controller.errors import InvalidArgument, OperationError, vm_state_error
from controller.resources.common import create_row
from controller.storage.common import located
from controller.storage.snapshots import CreateVolumeSnapshotMsg, create_volume_snapshot
from controller.util import new_uuid, now_iso
from kvmagent.contract import storage as sc

PROGRESS_INTERVAL = 1.0
Platform = Literal["Linux", "Windows", "WindowsVirtio", "Other", "Paravirtualization"]


class _TemplateMsg(CreateMessage):
    name: Name
    description: Description | None = None
    backupStorageUuids: list[Uuid] | None = None


class CreateRootVolumeTemplateFromRootVolumeMsg(_TemplateMsg):
    rootVolumeUuid: Uuid
    guestOsType: str | None = Field(default=None, max_length=255)
    platform: Platform | None = None
    system: bool = False


class CreateRootVolumeTemplateFromVolumeSnapshotMsg(_TemplateMsg):
    snapshotUuid: Uuid
    guestOsType: str | None = Field(default=None, max_length=255)
    platform: Platform | None = None
    system: bool = False


class CreateDataVolumeTemplateFromVolumeMsg(_TemplateMsg):
    volumeUuid: Uuid


async def _storages(ctx: ApiContext, wanted: list[str] | None, zone_uuid: str) -> list[dict[str, Any]]:
    """The Connected+Enabled backup storages of ``zone_uuid`` among ``wanted`` (all of the zone's if none)."""
    sql = ("SELECT b.* FROM BackupStorage b JOIN BackupStorageZoneRef z ON z.backupStorageUuid = b.uuid "
           "AND z.zoneUuid = ? WHERE b.status = 'Connected' AND b.state = 'Enabled'")
    params: tuple[Any, ...] = (zone_uuid,)
    if wanted:
        sql += f" AND b.uuid IN ({', '.join('?' for _ in wanted)})"
        params += tuple(wanted)
    rows = [dict(r) for r in await ctx.db.fetchall(sql + " ORDER BY b.createDate", params)]
    if not rows:
        which = f"in uuids{wanted} " if wanted else ""
        raise OperationError(f"no backup storage {which}is available for the new image: it must be Connected, "
                             f"Enabled and attached to the zone[uuid:{zone_uuid}] of the volume")
    return rows


async def _vm_of(ctx: ApiContext, volume: dict[str, Any], api_name: str) -> dict[str, Any] | None:
    if not volume["vmInstanceUuid"]:
        return None
    vm = dict(await ctx.require("VmInstance", volume["vmInstanceUuid"], "vmInstanceUuid"))
    if vm["state"] not in ("Stopped", "Running"):
        raise vm_state_error(vm["uuid"], vm["state"], api_name, ["Stopped", "Running"])
    return vm


def _ready(volume: dict[str, Any], field: str) -> None:
    if volume["status"] != "Ready" or not volume["installPath"]:
        raise OperationError(f"invalid field[{field}]: volume[uuid:{volume['uuid']}] is {volume['status']}; only a "
                             "Ready volume (created on a host) can become an image")


async def _zone_of_host(ctx: ApiContext, host_uuid: str) -> str:
    row = await ctx.db.fetchone("SELECT zoneUuid FROM Host WHERE uuid=?", (host_uuid,))
    return str(row["zoneUuid"])


async def _progress_poller(ctx: ApiContext, uuid: str, bs: dict[str, Any], path: str, total: int, base: int,
                           share: int) -> None:
    """Write downloadProgress from the size of the partial file on the storage until cancelled."""
    try:
        async with connect(Endpoint.of(bs, ctx)) as conn, conn.start_sftp_client() as sftp:
            while True:
                await asyncio.sleep(PROGRESS_INTERVAL)
                try:
                    done = (await sftp.stat(path + ".partial")).size or 0
                except (asyncssh.SFTPError, OSError):
                    continue
                pct = base + min(share - 1, int(done) * share // max(total, 1))
                async with ctx.db.write() as tx:
                    await tx.update("Image", {"uuid": uuid}, {"downloadProgress": pct})
    except BackupStorageError:
        return


async def _verify(ctx: ApiContext, bs: dict[str, Any], path: str, md5: str, url: str) -> int:
    """md5 of the uploaded file recomputed on the storage host and compared; qemu-img info checks it is a
    self-contained qcow2. Its virtual size."""
    async with connect(Endpoint.of(bs, ctx)) as conn, conn.start_sftp_client() as sftp:
        out = await execute(conn, ["md5sum", path], timeout=3600)
        got = out.split()[0] if out.split() else ""
        if got != md5:
            raise BackupStorageError(f"checksum mismatch of {path} on backup storage[uuid:{bs['uuid']}]: the host "
                                     f"computed md5 {md5}, the storage has {got or 'nothing'}")
        found = await inspect_remote(conn, sftp, path, url=url, declared="qcow2")
    if found.format != "qcow2":
        raise BackupStorageError(f"{path} on backup storage[uuid:{bs['uuid']}] is {found.format}, not qcow2")
    return int(found.virtual_size)


async def export_image(ctx: ApiContext, msg: _TemplateMsg, row: dict[str, Any], *, host: dict[str, Any],
                       ps: dict[str, Any], source_path: str, virtual_size: int) -> dict[str, Any]:
    """Create the image record with ``row``'s fields, export ``source_path`` from ``host`` to every chosen
    storage, verify, and answer the image inventory (rolled back on any failure)."""
    storages = await _storages(ctx, msg.backupStorageUuids, host["zoneUuid"])
    paths: dict[str, str] = {}

    async def refs(tx: Any, image: dict[str, Any]) -> None:
        for bs in storages:
            paths[bs["uuid"]] = f"{bs['url'].rstrip('/')}/images/{image['uuid']}/{image['uuid']}.qcow2"
            await tx.insert("ImageBackupStorageRef", {
                "imageUuid": image["uuid"], "backupStorageUuid": bs["uuid"], "installPath": paths[bs["uuid"]],
                "status": "Downloading", "createDate": now_iso(), "lastOpDate": now_iso()})

    image = await create_row(ctx, "Image", "ImageVO", msg, {
        **row, "format": "qcow2", "status": "Creating", "state": "Enabled", "downloadProgress": 0}, after=refs)
    uuid = image["uuid"]
    try:
        done: dict[str, Any] = {}
        share = 100 // len(storages)
        for i, bs in enumerate(storages):
            poller = asyncio.create_task(_progress_poller(ctx, uuid, bs, paths[bs["uuid"]], virtual_size,
                                                          i * share, share))
            try:
                t0 = time.monotonic()
                reply = await ctx.core.services["agents"].call(host, sc.ExportCmd(
                    storagePath=ps["url"], installPath=source_path, url=sftp_url(bs, paths[bs["uuid"]]),
                    sftpPassword=sealed.unseal(ctx.core, bs["password"]) or "", sftpHostKey=bs["sshHostKey"]),
                    timeout=6 * 3600)
            finally:
                poller.cancel()
            size = await _verify(ctx, bs, paths[bs["uuid"]], reply.md5, f"volume {source_path}")
            done = {"md5": reply.md5, "size": reply.size, "virtual": size, "seconds": time.monotonic() - t0}
        async with ctx.db.write() as tx:
            await tx.update("Image", {"uuid": uuid}, {
                "status": "Ready", "size": done["virtual"], "actualSize": done["size"], "md5Sum": done["md5"],
                "downloadProgress": 100, "lastOpDate": now_iso()})
            await tx.execute("UPDATE ImageBackupStorageRef SET status='Ready', lastOpDate=? WHERE imageUuid=?",
                             (now_iso(), uuid))
    except BaseException:
        await _roll_back(ctx, uuid, storages, paths)
        raise
    for bs in storages:
        await refresh_capacity(ctx, bs)
    return {"inventory": await ctx.inventory("Image", uuid)}


async def _snapshot_source(ctx: ApiContext, snap: dict[str, Any]) -> str:
    if snap["status"] != "Ready" or not snap["primaryStorageInstallPath"]:
        raise OperationError(f"volume snapshot[uuid:{snap['uuid']}] is {snap['status']}; only a Ready snapshot "
                             "can become an image")
    return str(snap["primaryStorageInstallPath"])


def _root_template_row(msg: CreateRootVolumeTemplateFromRootVolumeMsg | CreateRootVolumeTemplateFromVolumeSnapshotMsg,
                       vm: Any) -> dict[str, Any]:
    """The Image row of a RootVolumeTemplate made from a VM's disk (``vm`` a VmInstance row or None): the
    platform is the message's, else the VM's, else Linux."""
    return {"name": msg.name, "description": msg.description, "mediaType": "RootVolumeTemplate",
            "platform": msg.platform or (vm["platform"] if vm and vm["platform"] else "Linux"),
            "guestOsType": msg.guestOsType, "system": int(msg.system)}


@api("CreateRootVolumeTemplateFromRootVolume", CreateRootVolumeTemplateFromRootVolumeMsg, job=True,
     queue=lambda m: m.rootVolumeUuid)
async def create_template_from_root_volume(ctx: ApiContext,
                                           msg: CreateRootVolumeTemplateFromRootVolumeMsg) -> dict[str, Any]:
    """A RootVolumeTemplate image from a VM's root volume (Stopped, or Running through a live snapshot)."""
    volume = dict(await ctx.require("Volume", msg.rootVolumeUuid, "rootVolumeUuid", vo="VolumeVO"))
    if volume["type"] != "Root":
        raise InvalidArgument(f"invalid field[rootVolumeUuid]: volume[uuid:{volume['uuid']}] is a {volume['type']} "
                              "volume, not a root volume")
    _ready(volume, "rootVolumeUuid")
    vm = await _vm_of(ctx, volume, "CreateRootVolumeTemplateFromRootVolume")
    host, ps = await located(ctx.core, volume)
    await _storages(ctx, msg.backupStorageUuids, host["zoneUuid"])  # refuse before any snapshot is taken
    info = await ctx.core.services["agents"].call(host, sc.VolumeInfoCmd(storagePath=ps["url"],
                                                                         installPath=volume["installPath"]))
    source = str(volume["installPath"])
    uuid = msg.resourceUuid or None
    if vm is not None and vm["state"] == "Running":
        uuid = uuid or new_uuid()
        msg.resourceUuid = uuid
        snap = (await create_volume_snapshot(ctx, CreateVolumeSnapshotMsg(
            volumeUuid=volume["uuid"], name=f"for image {uuid}",
            description=f"taken live by CreateRootVolumeTemplateFromRootVolume for image {uuid}")))["inventory"]
        source = await _snapshot_source(ctx, snap)
    row = _root_template_row(msg, vm)
    return await export_image(ctx, msg, row, host=host, ps=ps, source_path=source, virtual_size=int(info.size))


@api("CreateRootVolumeTemplateFromVolumeSnapshot", CreateRootVolumeTemplateFromVolumeSnapshotMsg, job=True,
     queue=lambda m: m.snapshotUuid)
async def create_template_from_snapshot(ctx: ApiContext,
                                        msg: CreateRootVolumeTemplateFromVolumeSnapshotMsg) -> dict[str, Any]:
    """A RootVolumeTemplate image holding the disk as it was when the snapshot was taken."""
    snap = dict(await ctx.require("VolumeSnapshot", msg.snapshotUuid, "snapshotUuid", vo="VolumeSnapshotVO"))
    source = await _snapshot_source(ctx, snap)
    volume = dict(await ctx.require("Volume", snap["volumeUuid"], "snapshotUuid", vo="VolumeVO"))
    host, ps = await located(ctx.core, volume)
    info = await ctx.core.services["agents"].call(host, sc.VolumeInfoCmd(storagePath=ps["url"],
                                                                         installPath=volume["installPath"]))
    vm = await ctx.db.fetchone("SELECT platform FROM VmInstance WHERE uuid=?", (volume["vmInstanceUuid"],))
    row = _root_template_row(msg, vm)
    return await export_image(ctx, msg, row, host=host, ps=ps, source_path=source, virtual_size=int(info.size))


@api("CreateDataVolumeTemplateFromVolume", CreateDataVolumeTemplateFromVolumeMsg, job=True,
     queue=lambda m: m.volumeUuid)
async def create_data_template_from_volume(ctx: ApiContext,
                                           msg: CreateDataVolumeTemplateFromVolumeMsg) -> dict[str, Any]:
    """A DataVolumeTemplate image from a volume whose VM is Stopped (or that is detached)."""
    volume = dict(await ctx.require("Volume", msg.volumeUuid, "volumeUuid", vo="VolumeVO"))
    _ready(volume, "volumeUuid")
    vm = await _vm_of(ctx, volume, "CreateDataVolumeTemplateFromVolume")
    if vm is not None and vm["state"] != "Stopped":
        raise vm_state_error(vm["uuid"], vm["state"], "CreateDataVolumeTemplateFromVolume", ["Stopped"])
    host, ps = await located(ctx.core, volume)
    info = await ctx.core.services["agents"].call(host, sc.VolumeInfoCmd(storagePath=ps["url"],
                                                                         installPath=volume["installPath"]))
    row = {"name": msg.name, "description": msg.description, "mediaType": "DataVolumeTemplate",
           "platform": "Linux", "guestOsType": None, "system": 0}
    return await export_image(ctx, msg, row, host=host, ps=ps, source_path=str(volume["installPath"]),
                              virtual_size=int(info.size))

