"""VIP and EIP on the virtual router (reference virtual-router.md §2; 1.0's messages).

* ``CreateVip name, l3NetworkUuid, requiredIp?``: an address of the L3 (allocated, or the required one; a
  second VIP on the same address is refused). ``DeleteVip`` deletes its EIPs and port-forwarding rules and
  returns the address;
  ``QueryVip`` is generic.
* ``CreateEip name, vipUuid, vmNicUuid?``: the VIP must be Enabled and serve nothing yet (``useFor`` is then
  ``Eip``); the NIC must not have an EIP, must not be on the VIP's L3, and its L3 must take the Eip and SNAT
  services from the VirtualRouter provider whose router's public network is the VIP's L3 (vips.check_guest_nic).
  ``AttachEip eipUuid, vmNicUuid`` / ``DetachEip uuid`` / ``DeleteEip uuid`` (unknown uuid: success);
  ``QueryEip`` is generic.
* ``UpdateVip`` / ``UpdateEip`` (name, description), ``ChangeVipState`` / ``ChangeEipState`` (a Disabled one is
  not applied on the router), ``GetEipAttachableVmNics eipUuid | vipUuid``.
* Every change is pushed at once to the router of the NIC's L3 when it runs (the whole state: the VIP as an
  extra address of the router's public NIC, DNAT VIP -> guest, SNAT guest -> VIP); a push failure fails the
  API after the records changed: the next push (VM start, any EIP change) brings the router in line.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from controller.api.context import ApiContext
from controller.api.messages import (
    ApiMessage,
    ChangeStateMessage,
    CreateMessage,
    Description,
    Name,
    Uuid,
    UuidDeleteMessage,
    UuidMessage,
)
from controller.api.registry import api, by_uuid
from controller.db.database import Tx
from controller.errors import InvalidArgument, OperationError
from controller.resources import ipam
from controller.resources.common import STATE_EVENTS, create_row, update_api, update_fields
from controller.util import now_iso
from controller.vrouter_provider.vips import check_guest_nic, enabled_vip, guest_l3s_of_vip, push, unbind


class CreateVipMsg(CreateMessage):
    name: Name
    description: Description | None = None
    l3NetworkUuid: Uuid
    requiredIp: str | None = None
    allocatorStrategy: str | None = None


class CreateEipMsg(CreateMessage):
    name: Name
    description: Description | None = None
    vipUuid: Uuid
    vmNicUuid: Uuid | None = None


class AttachEipMsg(ApiMessage):
    eipUuid: Uuid
    vmNicUuid: Uuid


@api("CreateVip", CreateVipMsg)
async def create_vip(ctx: ApiContext, msg: CreateVipMsg) -> dict[str, Any]:
    """Create a virtual IP on an L3 network (for an EIP)."""
    await ctx.require("L3Network", msg.l3NetworkUuid, "l3NetworkUuid")

    async def before(tx: Any) -> None:
        if msg.requiredIp and await tx.fetchone("SELECT 1 FROM Vip WHERE l3NetworkUuid=? AND ip=?",
                                                (msg.l3NetworkUuid, msg.requiredIp)):
            raise OperationError(f"there is already a vip[{msg.requiredIp}] on l3Network[uuid:{msg.l3NetworkUuid}]")

    async def after(tx: Any, row: dict[str, Any]) -> None:
        used = await (ipam.allocate_ip(tx, msg.l3NetworkUuid, msg.requiredIp, used_for="Vip", field="requiredIp")
                      if msg.requiredIp else ipam.allocate(tx, msg.l3NetworkUuid, used_for="Vip"))
        await tx.update("Vip", {"uuid": row["uuid"]}, {
            "ip": used["ip"], "usedIpUuid": used["uuid"], "ipRangeUuid": used["ipRangeUuid"],
            "gateway": used["gateway"], "netmask": used["netmask"]})

    created = await create_row(ctx, "Vip", "VipVO", msg, {
        "name": msg.name, "description": msg.description, "l3NetworkUuid": msg.l3NetworkUuid, "state": "Enabled",
        "ip": ""}, before=before, after=after)
    return {"inventory": await ctx.inventory("Vip", created["uuid"])}


@api("DeleteVip", UuidDeleteMessage, queue=by_uuid)
async def delete_vip(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a VIP and the EIPs on it; an unknown uuid succeeds (1.0)."""
    vip = await ctx.db.fetchone("SELECT * FROM Vip WHERE uuid=?", (msg.uuid,))
    if vip is None:
        return {}
    l3s = await guest_l3s_of_vip(ctx, msg.uuid)
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM Eip WHERE vipUuid=?", (msg.uuid,))
        await tx.execute("DELETE FROM Vip WHERE uuid=?", (msg.uuid,))
        if vip["usedIpUuid"]:
            await ipam.release(tx, vip["usedIpUuid"])
    await push(ctx, l3s)
    return {}


async def _check_nic(ctx: ApiContext, vip: dict[str, Any], nic_uuid: str, field: str) -> dict[str, Any]:
    """One EIP per NIC, and the NIC rules shared with port forwarding."""
    other = await ctx.db.fetchone("SELECT uuid FROM Eip WHERE vmNicUuid=?", (nic_uuid,))
    if other is not None:
        raise OperationError(f"vm nic[uuid:{nic_uuid}] has attached to another eip[uuid:{other['uuid']}]")
    return await check_guest_nic(ctx, vip, nic_uuid, field, "Eip")


@api("CreateEip", CreateEipMsg)
async def create_eip(ctx: ApiContext, msg: CreateEipMsg) -> dict[str, Any]:
    """Create an elastic IP on a VIP, optionally attached to a VM NIC."""
    vip = await enabled_vip(ctx, msg.vipUuid, None)
    nic = await _check_nic(ctx, vip, msg.vmNicUuid, "vmNicUuid") if msg.vmNicUuid else None

    async def before(tx: Any) -> None:   # a port-forwarding rule may have taken the VIP since the check
        now = await tx.fetchone("SELECT useFor FROM Vip WHERE uuid=?", (vip["uuid"],))
        if now is None or now["useFor"]:
            raise OperationError(f"vip[uuid:{vip['uuid']}] has been occupied other network service entity"
                                 f"[{now['useFor'] if now else 'deleted'}]")

    async def after(tx: Any, row: dict[str, Any]) -> None:
        await tx.update("Vip", {"uuid": vip["uuid"]}, {
            "useFor": "Eip", "serviceProvider": "VirtualRouter", "lastOpDate": now_iso(),
            **({"peerL3NetworkUuid": nic["l3NetworkUuid"]} if nic else {})})

    created = await create_row(ctx, "Eip", "EipVO", msg, {
        "name": msg.name, "description": msg.description, "vipUuid": vip["uuid"],
        "vmNicUuid": nic["uuid"] if nic else None, "state": "Enabled", "vipIp": vip["ip"],
        "guestIp": nic["ip"] if nic else None}, before=before, after=after)
    if nic:
        await push(ctx, {nic["l3NetworkUuid"]})
    return {"inventory": await ctx.inventory("Eip", created["uuid"])}


@api("AttachEip", AttachEipMsg, queue=lambda m: m.eipUuid)
async def attach_eip(ctx: ApiContext, msg: AttachEipMsg) -> dict[str, Any]:
    """Attach an elastic IP to a VM NIC."""
    eip = await ctx.require("Eip", msg.eipUuid, "eipUuid")
    if eip["vmNicUuid"]:
        raise OperationError(f"eip[uuid:{eip['uuid']}] has attached to another vm nic[uuid:{eip['vmNicUuid']}]")
    if eip["state"] != "Enabled":
        raise OperationError(f"eip[uuid:{eip['uuid']}] is {eip['state']}, not Enabled")
    vip = await enabled_vip(ctx, eip["vipUuid"], "Eip")
    nic = await _check_nic(ctx, vip, msg.vmNicUuid, "vmNicUuid")
    async with ctx.db.write() as tx:
        await tx.update("Eip", {"uuid": eip["uuid"]}, {"vmNicUuid": nic["uuid"], "guestIp": nic["ip"],
                                                       "lastOpDate": now_iso()})
        await tx.update("Vip", {"uuid": vip["uuid"]}, {"peerL3NetworkUuid": nic["l3NetworkUuid"]})
    await push(ctx, {nic["l3NetworkUuid"]})
    return {"inventory": await ctx.inventory("Eip", eip["uuid"])}


async def _unpin_vip(tx: Tx, vip_uuid: str) -> None:
    """An EIP left its NIC: its VIP no longer belongs to a guest L3 (it stays the EIP's)."""
    await tx.update("Vip", {"uuid": vip_uuid}, {"peerL3NetworkUuid": None})


async def _free_vip(tx: Tx, vip_uuid: str) -> None:
    """An EIP was deleted: its VIP is free for any service again."""
    await tx.update("Vip", {"uuid": vip_uuid}, {"useFor": None, "peerL3NetworkUuid": None, "serviceProvider": None,
                                                "lastOpDate": now_iso()})


@api("DetachEip", UuidMessage, queue=by_uuid)
async def detach_eip(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """Detach an elastic IP from its VM NIC."""
    eip = await ctx.require("Eip", msg.uuid, "uuid")
    if not eip["vmNicUuid"]:
        raise OperationError(f"eip[uuid:{eip['uuid']}] has not attached to any vm nic")
    await unbind(ctx, "Eip", eip, delete=False, release_vip=_unpin_vip)
    return {"inventory": await ctx.inventory("Eip", eip["uuid"])}


@api("DeleteEip", UuidDeleteMessage, queue=by_uuid)
async def delete_eip(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete an elastic IP (its VIP is free again); an unknown uuid succeeds (1.0)."""
    eip = await ctx.db.fetchone("SELECT * FROM Eip WHERE uuid=?", (msg.uuid,))
    if eip is None:
        return {}
    await unbind(ctx, "Eip", dict(eip), delete=True, release_vip=_free_vip)
    return {}


update_api("Vip", "Change a VIP's name or description.")
update_api("Eip", "Change an EIP's name or description.")


async def _change_state(ctx: ApiContext, table: str, msg: ChangeStateMessage) -> dict[str, Any]:
    """Enable or disable; the routers of the affected guest L3s get the new state at once (a Disabled EIP or an
    EIP on a Disabled VIP is not applied)."""
    await update_fields(ctx, table, msg.uuid, {"state": STATE_EVENTS[msg.stateEvent]})
    vip_uuid = msg.uuid if table == "Vip" else (await ctx.require("Eip", msg.uuid, "uuid"))["vipUuid"]
    await push(ctx, await guest_l3s_of_vip(ctx, vip_uuid))
    return {"inventory": await ctx.inventory(table, msg.uuid)}


@api("ChangeVipState", ChangeStateMessage, queue=by_uuid)
async def change_vip_state(ctx: ApiContext, msg: ChangeStateMessage) -> dict[str, Any]:
    """Enable or disable a VIP (its EIPs are applied only while it is Enabled)."""
    return await _change_state(ctx, "Vip", msg)


@api("ChangeEipState", ChangeStateMessage, queue=by_uuid)
async def change_eip_state(ctx: ApiContext, msg: ChangeStateMessage) -> dict[str, Any]:
    """Enable or disable an EIP (a Disabled EIP is removed from its router, its binding kept)."""
    return await _change_state(ctx, "Eip", msg)


class GetEipAttachableVmNicsMsg(ApiMessage):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": [f], "properties": {f: {"type": "string"}}} for f in ("eipUuid", "vipUuid")]})
    eipUuid: Uuid | None = None
    vipUuid: Uuid | None = None


@api("GetEipAttachableVmNics", GetEipAttachableVmNicsMsg)
async def get_eip_attachable_vm_nics(ctx: ApiContext, msg: GetEipAttachableVmNicsMsg) -> dict[str, Any]:
    """NICs an EIP (or a VIP's new EIP) may be attached to: NICs of Running or Stopped user VMs in the VIP's zone,
    on L3s with the VirtualRouter Eip service other than the VIP's, without an EIP (1.0's rules)."""
    if not msg.eipUuid and not msg.vipUuid:
        raise InvalidArgument("invalid field[eipUuid, vipUuid]: one of them is required")
    vip_uuid = msg.vipUuid or (await ctx.require("Eip", msg.eipUuid or "", "eipUuid"))["vipUuid"]
    vip = await ctx.require("Vip", vip_uuid, "vipUuid")
    rows = await ctx.db.fetchall(
        "SELECT n.uuid FROM VmNic n JOIN VmInstance v ON v.uuid = n.vmInstanceUuid "
        "JOIN L3Network l3 ON l3.uuid = n.l3NetworkUuid "
        "WHERE v.type='UserVm' AND v.state IN ('Running', 'Stopped') AND l3.system=0 "
        "AND l3.zoneUuid = (SELECT zoneUuid FROM L3Network WHERE uuid=?) AND n.l3NetworkUuid<>? "
        "AND NOT EXISTS (SELECT 1 FROM Eip e WHERE e.vmNicUuid = n.uuid) "
        "AND EXISTS (SELECT 1 FROM NetworkServiceL3NetworkRef r JOIN NetworkServiceProvider p "
        "ON p.uuid = r.networkServiceProviderUuid WHERE r.l3NetworkUuid = n.l3NetworkUuid "
        "AND r.networkServiceType='Eip' AND p.type='VirtualRouter') ORDER BY n.createDate, n.uuid",
        (vip["l3NetworkUuid"], vip["l3NetworkUuid"]))
    return {"inventories": [await ctx.inventory("VmNic", r[0]) for r in rows]}
