"""ISO attach/detach and boot order (reference §3.6, seed §4).

* The attachment is the inherent VM tag ``iso::<imageUuid>``: one ISO per VM, kept across restarts. On a
  Stopped VM attach/detach only change the tag (used at the next start); on a Running VM the ISO is put into the
  host's image cache and inserted into the CD-ROM live (and the other way round for detach).
* The boot order is the VM tag ``bootOrder::<HardDisk,CdRom,...>``; without it the VM boots from its disk.
  Attaching an ISO does not change the boot order. A VM created from an ISO boots from the CD-ROM on its first
  start, then from its disk after the installer's reboot (the agent's ``firstBootFromCd``).
"""

from __future__ import annotations

from typing import Any, Literal

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.backup.cache import cache_source
from controller.compute import statemachine as sm
from controller.compute.connect import storage_for
from controller.core import Controller
from controller.errors import InvalidArgument, OperationError
from controller.util import now_iso
from kvmagent.contract import storage as sc
from kvmagent.contract import vm as vc

BOOT_DEVICES: dict[str, vc.BootDev] = {"HardDisk": "hd", "CdRom": "cdrom"}


async def _tag(core: Controller, vm_uuid: str, key: str) -> tuple[str, str] | None:
    """(tag uuid, value) of the VM's system tag ``key::value``, if any."""
    found = await core.services["tags"].values(vm_uuid, key)
    if not found:
        return None
    tag_uuid, values = found[0]
    return tag_uuid, next(iter(values.values()))


async def boot_order(core: Controller, vm_uuid: str) -> list[str]:
    t = await _tag(core, vm_uuid, "bootOrder")
    return t[1].split(",") if t else ["HardDisk"]


async def attached_iso(core: Controller, vm_uuid: str) -> str | None:
    t = await _tag(core, vm_uuid, "iso")
    return t[1] if t else None


async def cache_iso(core: Controller, host: dict[str, Any], image: dict[str, Any]) -> str:
    """Put the ISO into the host's image cache; returns its path there."""
    path, _ = await storage_for(core, host)
    kw = await cache_source(core, image, zone_uuid=host["zoneUuid"])
    reply = await core.services["agents"].call(host, sc.DownloadImageCmd(
        storagePath=path, imageUuid=image["uuid"], format="iso", **kw), timeout=1800)
    return str(reply.installPath)


async def boot_spec(core: Controller, host: dict[str, Any], vm: dict[str, Any], *, new_create: bool) -> dict[str, Any]:
    """The ``bootDev``, ``bootIso`` and ``firstBootFromCd`` fields of ``/vm/start`` for this VM; ``new_create``
    is the start inside CreateVmInstance (an ISO-created VM then boots from the CD-ROM once)."""
    order = [BOOT_DEVICES[d] for d in await boot_order(core, vm["uuid"])]
    iso_uuid = await attached_iso(core, vm["uuid"])
    boot_iso = None
    if iso_uuid:
        image = await core.db.fetchone("SELECT * FROM Image WHERE uuid=?", (iso_uuid,))
        if image is not None:
            boot_iso = vc.IsoTO(path=await cache_iso(core, host, dict(image)), imageUuid=iso_uuid)
    first_from_cd = new_create and bool(boot_iso) and await _created_from_iso(core, vm)
    if first_from_cd:
        order = ["cdrom", "hd"]
    return {"bootDev": order, "bootIso": boot_iso, "firstBootFromCd": first_from_cd}


async def _created_from_iso(core: Controller, vm: dict[str, Any]) -> bool:
    image = await core.db.fetchone("SELECT mediaType FROM Image WHERE uuid=?", (vm["imageUuid"],))
    return image is not None and image["mediaType"] == "ISO"


class AttachIsoMsg(ApiMessage):
    vmInstanceUuid: Uuid
    isoUuid: Uuid


class DetachIsoMsg(ApiMessage):
    vmInstanceUuid: Uuid


class GetVmBootOrderMsg(ApiMessage):
    uuid: Uuid


class SetVmBootOrderMsg(ApiMessage):
    uuid: Uuid
    bootOrder: list[Literal["HardDisk", "CdRom"]] | None = None


async def _vm_host(ctx: ApiContext, vm: dict[str, Any]) -> dict[str, Any] | None:
    if vm["state"] != "Running" or not vm["hostUuid"]:
        return None
    return await ctx.require("Host", vm["hostUuid"], "hostUuid")


@api("AttachIsoToVmInstance", AttachIsoMsg, job=True, queue=lambda m: m.vmInstanceUuid)
async def attach_iso(ctx: ApiContext, msg: AttachIsoMsg) -> dict[str, Any]:
    """Attach an ISO to a VM (live when it runs; at the next start when it is stopped)."""
    vm = await ctx.require("VmInstance", msg.vmInstanceUuid, "vmInstanceUuid")
    sm.check_allowed(vm["uuid"], vm["state"], "AttachIsoToVmInstance")
    image = await ctx.require("Image", msg.isoUuid, "isoUuid", vo="ImageVO")
    if image["mediaType"] != "ISO":
        raise InvalidArgument(f"invalid field[isoUuid]: image[uuid:{msg.isoUuid}] is a {image['mediaType']}, "
                              "not an ISO")
    current = await attached_iso(ctx.core, vm["uuid"])
    if current == msg.isoUuid:
        return {"inventory": await ctx.inventory("VmInstance", vm["uuid"])}
    if current:
        raise OperationError(f"VM[uuid:{vm['uuid']}] already has an ISO[uuid:{current}] attached")
    host = await _vm_host(ctx, vm)
    if host is not None:
        path = await cache_iso(ctx.core, host, image)
        await ctx.core.services["agents"].call(host, vc.AttachIsoCmd(
            uuid=vm["uuid"], iso=vc.IsoTO(path=path, imageUuid=msg.isoUuid)))
    async with ctx.db.write() as tx:
        await ctx.core.services["tags"].write(tx, "VmInstanceVO", vm["uuid"], f"iso::{msg.isoUuid}", system=True,
                                              inherent=True)
    return {"inventory": await ctx.inventory("VmInstance", vm["uuid"])}


@api("DetachIsoFromVmInstance", DetachIsoMsg, job=True, queue=lambda m: m.vmInstanceUuid)
async def detach_iso(ctx: ApiContext, msg: DetachIsoMsg) -> dict[str, Any]:
    """Detach the VM's ISO (ejected live when it runs)."""
    vm = await ctx.require("VmInstance", msg.vmInstanceUuid, "vmInstanceUuid")
    sm.check_allowed(vm["uuid"], vm["state"], "DetachIsoFromVmInstance")
    current = await attached_iso(ctx.core, vm["uuid"])
    if current is None:
        return {"inventory": await ctx.inventory("VmInstance", vm["uuid"])}
    host = await _vm_host(ctx, vm)
    if host is not None:
        await ctx.core.services["agents"].call(host, vc.DetachIsoCmd(uuid=vm["uuid"], isoUuid=current))
    async with ctx.db.write() as tx:
        await ctx.core.services["tags"].remove(tx, vm["uuid"], "iso")
    return {"inventory": await ctx.inventory("VmInstance", vm["uuid"])}


@api("GetVmBootOrder", GetVmBootOrderMsg)
async def get_vm_boot_order(ctx: ApiContext, msg: GetVmBootOrderMsg) -> dict[str, Any]:
    """The VM's boot device order (``order``), HardDisk when none was set."""
    await ctx.require("VmInstance", msg.uuid, "uuid")
    return {"order": await boot_order(ctx.core, msg.uuid)}


@api("SetVmBootOrder", SetVmBootOrderMsg, queue=lambda m: m.uuid)
async def set_vm_boot_order(ctx: ApiContext, msg: SetVmBootOrderMsg) -> dict[str, Any]:
    """Set the boot device order (HardDisk, CdRom), used from the next start or reboot; null resets it."""
    await ctx.require("VmInstance", msg.uuid, "uuid")
    order = msg.bootOrder
    if order is not None and (not order or len(set(order)) != len(order)):
        raise InvalidArgument(f"invalid boot order{order}: list each of HardDisk and CdRom at most once")
    async with ctx.db.write() as tx:
        await ctx.core.services["tags"].remove(tx, msg.uuid, "bootOrder")
        if order:
            await ctx.core.services["tags"].write(tx, "VmInstanceVO", msg.uuid, "bootOrder::" + ",".join(order),
                                                  system=True)
        await tx.execute("UPDATE VmInstance SET lastOpDate=? WHERE uuid=?", (now_iso(), msg.uuid))
    return {"inventory": await ctx.inventory("VmInstance", msg.uuid)}
