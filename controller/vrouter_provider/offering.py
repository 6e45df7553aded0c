"""Virtual router offerings (reference virtual-router.md §1.1): an InstanceOffering of type VirtualRouter plus
zone, management/public L3, image and isDefault (table VirtualRouterOffering, view VirtualRouterOfferingView).

Rules (1.0): zone, L3s and image exist; both L3s in the offering's zone; public defaults to management; the
image is a RootVolumeTemplate; neither L3 has the SNAT service; only an admin may set isDefault; the first
offering of a zone is its default; isDefault=true clears the flag on the zone's other offerings.
"""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import UpdateMessage, Uuid
from controller.api.registry import api, by_uuid
from controller.db.database import Tx
from controller.errors import InvalidArgument, NotFound, OperationError, PermissionDenied
from controller.identity import ADMIN_UUID
from controller.resources.common import create_row
from controller.resources.offering import InstanceOfferingFields
from controller.util import now_iso


class CreateVirtualRouterOfferingMsg(InstanceOfferingFields):
    zoneUuid: Uuid
    managementNetworkUuid: Uuid
    publicNetworkUuid: Uuid | None = None
    imageUuid: Uuid
    isDefault: bool = False


class UpdateVirtualRouterOfferingMsg(UpdateMessage):
    imageUuid: Uuid | None = None
    isDefault: bool | None = None


def _admin_only(ctx: ApiContext, what: str) -> None:
    if ctx.session is not None and ctx.session.accountUuid != ADMIN_UUID:
        raise PermissionDenied(f"cannot {what} a virtual router offering with the default field set; only admin "
                               "can do the operation")


async def _snat_free(ctx: ApiContext, l3_uuid: str, role: str) -> None:
    if await ctx.db.fetchone("SELECT 1 FROM NetworkServiceL3NetworkRef WHERE l3NetworkUuid=? AND "
                             "networkServiceType='SNAT'", (l3_uuid,)):
        raise InvalidArgument(f"the L3 network[uuid: {l3_uuid}] has the SNAT service enabled, it cannot be used "
                              f"as a {role} network")


async def _image(ctx: ApiContext, uuid: str) -> None:
    image = await ctx.require("Image", uuid, "imageUuid")
    if image["mediaType"] != "RootVolumeTemplate":
        raise InvalidArgument(f"invalid field[imageUuid]: image[uuid:{uuid}] is not a RootVolumeTemplate, it's "
                              f"{image['mediaType']}")


async def _clear_default(tx: Tx, zone_uuid: str, keep: str) -> None:
    await tx.execute("UPDATE VirtualRouterOffering SET isDefault=0 WHERE zoneUuid=? AND uuid<>?", (zone_uuid, keep))


@api("CreateVirtualRouterOffering", CreateVirtualRouterOfferingMsg)
async def create_virtual_router_offering(ctx: ApiContext, msg: CreateVirtualRouterOfferingMsg) -> dict[str, Any]:
    """Create a virtual router offering (an instance offering of type VirtualRouter for a zone)."""
    if msg.isDefault:
        _admin_only(ctx, "create")
    await ctx.require("Zone", msg.zoneUuid, "zoneUuid")
    public = msg.publicNetworkUuid or msg.managementNetworkUuid
    for field, uuid, role in (("managementNetworkUuid", msg.managementNetworkUuid, "management"),
                              ("publicNetworkUuid", public, "public")):
        l3 = await ctx.require("L3Network", uuid, field)
        if l3["zoneUuid"] != msg.zoneUuid:
            raise InvalidArgument(f"invalid field[{field}]: {role} network[uuid:{uuid}] is not in the same zone"
                                  f"[uuid:{msg.zoneUuid}] this offering is going to create")
        await _snat_free(ctx, uuid, role)
    await _image(ctx, msg.imageUuid)

    async def after(tx: Tx, row: dict[str, Any]) -> None:
        first = await tx.fetchone("SELECT 1 FROM VirtualRouterOffering WHERE zoneUuid=?", (msg.zoneUuid,)) is None
        await tx.insert("VirtualRouterOffering", {
            "uuid": row["uuid"], "zoneUuid": msg.zoneUuid, "managementNetworkUuid": msg.managementNetworkUuid,
            "publicNetworkUuid": public, "imageUuid": msg.imageUuid, "isDefault": int(first or msg.isDefault)})
        if msg.isDefault:
            await _clear_default(tx, msg.zoneUuid, row["uuid"])

    row = await create_row(ctx, "InstanceOffering", "InstanceOfferingVO", msg, {
        "name": msg.name, "description": msg.description, "cpuNum": msg.cpuNum, "cpuSpeed": msg.cpuSpeed,
        "memorySize": msg.memorySize, "type": "VirtualRouter", "allocatorStrategy": msg.allocatorStrategy,
        "sortKey": msg.sortKey, "state": "Enabled"}, after=after)
    return {"inventory": await ctx.inventory("VirtualRouterOffering", row["uuid"])}


@api("UpdateVirtualRouterOffering", UpdateVirtualRouterOfferingMsg, queue=by_uuid)
async def update_virtual_router_offering(ctx: ApiContext, msg: UpdateVirtualRouterOfferingMsg) -> dict[str, Any]:
    """Change a virtual router offering's name, description, image or isDefault."""
    vr = await ctx.db.fetchone("SELECT * FROM VirtualRouterOffering WHERE uuid=?", (msg.uuid,))
    if vr is None:
        raise NotFound(f"invalid field[uuid], resource[uuid:{msg.uuid}, type:VirtualRouterOfferingVO] not found")
    if msg.isDefault is not None:
        _admin_only(ctx, "update")
    if msg.imageUuid:
        await _image(ctx, msg.imageUuid)
    async with ctx.db.write() as tx:
        values = {k: v for k, v in (("name", msg.name), ("description", msg.description)) if v is not None}
        await tx.update("InstanceOffering", {"uuid": msg.uuid}, {**values, "lastOpDate": now_iso()})
        if msg.imageUuid:
            await tx.update("VirtualRouterOffering", {"uuid": msg.uuid}, {"imageUuid": msg.imageUuid})
        if msg.isDefault is not None:
            await tx.update("VirtualRouterOffering", {"uuid": msg.uuid}, {"isDefault": int(msg.isDefault)})
            if msg.isDefault:
                await _clear_default(tx, vr["zoneUuid"], msg.uuid)
    return {"inventory": await ctx.inventory("VirtualRouterOffering", msg.uuid)}


async def offering_for(db: Any, l3: dict[str, Any]) -> dict[str, Any]:
    """The offering for a guest L3: one tagged ``guestL3Network::<l3>`` in its zone, else the zone's default;
    VR.1002 when there is none."""
    row = await db.fetchone(
        "SELECT v.* FROM VirtualRouterOfferingView v JOIN SystemTag t ON t.resourceUuid = v.uuid "
        "WHERE v.zoneUuid=? AND t.tag=? AND v.state='Enabled' ORDER BY v.createDate LIMIT 1",
        (l3["zoneUuid"], f"guestL3Network::{l3['uuid']}"))
    if row is None:
        row = await db.fetchone("SELECT * FROM VirtualRouterOfferingView WHERE zoneUuid=? AND isDefault=1 "
                                "AND state='Enabled' ORDER BY createDate LIMIT 1", (l3["zoneUuid"],))
    if row is None:
        raise OperationError(f"unable to find a virtual router offering for l3Network[uuid:{l3['uuid']}] in zone"
                             f"[uuid:{l3['zoneUuid']}], please at least create a default virtual router offering "
                             "in that zone", code="VR.1002")
    return dict(row)
