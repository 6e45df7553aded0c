"""Port forwarding on the virtual router (reference virtual-router.md §2; 1.0's fields, rules and messages).

* ``CreatePortForwardingRule name, vipUuid, vipPortStart, vipPortEnd?, privatePortStart?, privatePortEnd?,
  protocolType TCP|UDP, allowedCidr?, vmNicUuid?, description?``: ports 1..65535; vipPortEnd defaults to
  vipPortStart, privatePortStart to vipPortStart, privatePortEnd to privatePortStart + the VIP range's size;
  start <= end (refused, not silently swapped as 1.0 did); the private range has the VIP range's size (1.0's
  "the port range size must match"); allowedCidr a network in CIDR form; the VIP range must not overlap a rule
  on the same VIP and protocol (1.0's check compared with the other rule's privatePortEnd: fixed). The VIP must
  be Enabled and serve nothing or port forwarding (a VIP with an EIP cannot take a rule; many rules may share
  a VIP) and one guest L3. The NIC (optional) must pass :func:`vips.check_guest_nic` (PortForwarding and SNAT
  from the VirtualRouter provider on its L3, not the VIP's L3).
* ``AttachPortForwardingRule ruleUuid, vmNicUuid`` (rule Enabled and detached), ``DetachPortForwardingRule
  uuid`` (attached), ``DeletePortForwardingRule uuid`` (unknown uuid: success), ``ChangePortForwardingRuleState``
  (a Disabled rule is not applied on the router), ``UpdatePortForwardingRule`` (name, description),
  ``GetPortForwardingAttachableVmNics ruleUuid`` (rule Enabled and detached; NICs of Running/Stopped user VMs of
  the VIP's zone whose L3 has PortForwarding and SNAT from the VirtualRouter provider, not on the VIP's L3, not
  already forwarded the same protocol and private ports: 1.0's query; on the VIP's guest L3 if it has one),
  ``QueryPortForwardingRule`` (generic).
* The VIP is released (``useFor`` cleared) when its last rule goes, and unpinned from its guest L3 when no rule
  on it is attached. Every change is pushed at once to the router of the affected guest L3 (the whole state);
  a push failure fails the API after the records changed: the next push brings the router in line.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated, Any, Literal

from pydantic import Field

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
from controller.resources.common import STATE_EVENTS, create_row, update_api, update_fields
from controller.util import now_iso
from controller.vrouter_provider import router
from controller.vrouter_provider.vips import check_guest_nic, enabled_vip, guest_l3s_of_vip, push, unbind

log = logging.getLogger(__name__)

SERVICE = "PortForwarding"
PortNumber = Annotated[int, Field(ge=1, le=65535)]


class CreatePortForwardingRuleMsg(CreateMessage):
    name: Name
    description: Description | None = None
    vipUuid: Uuid
    vipPortStart: PortNumber
    vipPortEnd: PortNumber | None = None
    privatePortStart: PortNumber | None = None
    privatePortEnd: PortNumber | None = None
    protocolType: Literal["TCP", "UDP"]
    allowedCidr: str | None = None
    vmNicUuid: Uuid | None = None


class AttachPortForwardingRuleMsg(ApiMessage):
    ruleUuid: Uuid
    vmNicUuid: Uuid


class GetPortForwardingAttachableVmNicsMsg(ApiMessage):
    ruleUuid: Uuid


def _ports(msg: CreatePortForwardingRuleMsg) -> tuple[int, int, int, int]:
    """(vipStart, vipEnd, privateStart, privateEnd) with 1.0's defaults, or 400 naming the fields."""
    vs = msg.vipPortStart
    ve = msg.vipPortEnd if msg.vipPortEnd is not None else vs
    if ve < vs:
        raise InvalidArgument(f"invalid field[vipPortEnd]: {ve} is below vipPortStart {vs}; a port range needs "
                              "start <= end")
    ps = msg.privatePortStart if msg.privatePortStart is not None else vs
    pe = msg.privatePortEnd if msg.privatePortEnd is not None else ps + (ve - vs)
    if pe > 65535:
        raise InvalidArgument(f"invalid field[privatePortStart]: {ps} + the vip range's size {ve - vs + 1} ends at "
                              f"{pe}, beyond 65535; give a private range of 1..65535")
    if pe < ps:
        raise InvalidArgument(f"invalid field[privatePortEnd]: {pe} is below privatePortStart {ps}; a port range "
                              "needs start <= end")
    if ve - vs != pe - ps:
        raise InvalidArgument(f"invalid field[privatePortEnd]: for range port forwarding, the port range size must "
                              f"match; vip range[{vs}, {ve}]'s size doesn't match range[{ps}, {pe}]'s size")
    return vs, ve, ps, pe


def _cidr(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError as e:
        raise InvalidArgument(f"invalid field[allowedCidr]: invalid CIDR[{value}]; give an IPv4 network such as "
                              "203.0.113.0/24") from e
    if "/" not in value or str(net) != value:
        raise InvalidArgument(f"invalid field[allowedCidr]: invalid CIDR[{value}]; give the network address with "
                              f"its prefix length, e.g. {net}")
    return value


async def _overlap(tx: Tx, vip_uuid: str, protocol: str, start: int, end: int) -> None:
    row = await tx.fetchone("SELECT uuid, vipPortStart, vipPortEnd FROM PortForwardingRule WHERE vipUuid=? AND "
                            "protocolType=? AND vipPortStart<=? AND vipPortEnd>=? ORDER BY vipPortStart LIMIT 1",
                            (vip_uuid, protocol, end, start))
    if row is not None:
        raise InvalidArgument(f"invalid field[vipPortStart]: vip port range[vipStartPort:{start}, vipEndPort:{end}] "
                              f"overlaps with rule[uuid:{row['uuid']}, vipStartPort:{row['vipPortStart']}, "
                              f"vipEndPort:{row['vipPortEnd']}] ({protocol} on the same vip)")


async def _still_free(tx: Tx, vip: dict[str, Any], nic: dict[str, Any] | None) -> None:
    """Inside the write: the VIP still serves nothing or port forwarding, and (with a NIC) no other guest L3
    (a concurrent EIP or rule may have taken it since the checks)."""
    now = await tx.fetchone("SELECT useFor, peerL3NetworkUuid FROM Vip WHERE uuid=?", (vip["uuid"],))
    if now is None:
        raise OperationError(f"vip[uuid:{vip['uuid']}] was deleted meanwhile")
    if now["useFor"] and now["useFor"] != SERVICE:
        raise OperationError(f"vip[uuid:{vip['uuid']}] has been occupied other network service entity"
                             f"[{now['useFor']}]")
    if nic and now["peerL3NetworkUuid"] and now["peerL3NetworkUuid"] != nic["l3NetworkUuid"]:
        raise OperationError(f"vip[uuid:{vip['uuid']}] has been serving l3Network[uuid:{now['peerL3NetworkUuid']}], "
                             f"can't serve l3Network[uuid:{nic['l3NetworkUuid']}]")


async def _release_vip(tx: Tx, vip_uuid: str) -> None:
    """After a rule left the VIP or its NIC: unpin the VIP from its guest L3 when no rule on it is attached,
    free it when it has no rule at all."""
    rules = await tx.fetchall("SELECT vmNicUuid FROM PortForwardingRule WHERE vipUuid=?", (vip_uuid,))
    values: dict[str, Any] = {"lastOpDate": now_iso()}
    if not any(r[0] for r in rules):
        values["peerL3NetworkUuid"] = None
    if not rules:
        values.update(useFor=None, serviceProvider=None)
    await tx.update("Vip", {"uuid": vip_uuid}, values)


@api("CreatePortForwardingRule", CreatePortForwardingRuleMsg)
async def create_port_forwarding_rule(ctx: ApiContext, msg: CreatePortForwardingRuleMsg) -> dict[str, Any]:
    """Create a port-forwarding rule on a VIP, optionally attached to a VM NIC."""
    vs, ve, ps, pe = _ports(msg)
    cidr = _cidr(msg.allowedCidr)
    vip = await enabled_vip(ctx, msg.vipUuid, SERVICE)
    nic = await check_guest_nic(ctx, vip, msg.vmNicUuid, "vmNicUuid", SERVICE) if msg.vmNicUuid else None

    async def before(tx: Tx) -> None:   # same snapshot as the insert: no overlapping rule slips in
        await _overlap(tx, vip["uuid"], msg.protocolType, vs, ve)
        await _still_free(tx, vip, nic)

    async def after(tx: Tx, row: dict[str, Any]) -> None:
        await tx.update("Vip", {"uuid": vip["uuid"]}, {
            "useFor": SERVICE, "serviceProvider": "VirtualRouter", "lastOpDate": now_iso(),
            **({"peerL3NetworkUuid": nic["l3NetworkUuid"]} if nic else {})})

    created = await create_row(ctx, "PortForwardingRule", "PortForwardingRuleVO", msg, {
        "name": msg.name, "description": msg.description, "vipUuid": vip["uuid"], "vipIp": vip["ip"],
        "vmNicUuid": nic["uuid"] if nic else None, "guestIp": nic["ip"] if nic else None,
        "vipPortStart": vs, "vipPortEnd": ve, "privatePortStart": ps, "privatePortEnd": pe,
        "protocolType": msg.protocolType, "state": "Enabled", "allowedCidr": cidr}, before=before, after=after)
    if nic:
        await push(ctx, {nic["l3NetworkUuid"]})
    return {"inventory": await ctx.inventory("PortForwardingRule", created["uuid"])}


async def _rule(ctx: ApiContext, uuid: str, field: str) -> dict[str, Any]:
    return await ctx.require("PortForwardingRule", uuid, field)


@api("AttachPortForwardingRule", AttachPortForwardingRuleMsg, queue=lambda m: m.ruleUuid)
async def attach_port_forwarding_rule(ctx: ApiContext, msg: AttachPortForwardingRuleMsg) -> dict[str, Any]:
    """Attach a port-forwarding rule to a VM NIC."""
    rule = await _rule(ctx, msg.ruleUuid, "ruleUuid")
    if rule["vmNicUuid"]:
        raise OperationError(f"port forwarding rule[uuid:{rule['uuid']}] has been attached to vm nic"
                             f"[uuid:{rule['vmNicUuid']}], can't attach again")
    if rule["state"] != "Enabled":
        raise OperationError(f"port forwarding rule[uuid:{rule['uuid']}] is not in state of Enabled, current state "
                             f"is {rule['state']}. A rule can only be attached when its state is Enabled")
    vip = await enabled_vip(ctx, rule["vipUuid"], SERVICE)
    nic = await check_guest_nic(ctx, vip, msg.vmNicUuid, "vmNicUuid", SERVICE)
    async with ctx.db.write() as tx:
        await _still_free(tx, vip, nic)
        n = await tx.execute("UPDATE PortForwardingRule SET vmNicUuid=?, guestIp=?, lastOpDate=? WHERE uuid=? AND "
                             "vmNicUuid IS NULL", (nic["uuid"], nic["ip"], now_iso(), rule["uuid"]))
        if n.rowcount != 1:
            raise OperationError(f"port forwarding rule[uuid:{rule['uuid']}] changed meanwhile; try again")
        await tx.update("Vip", {"uuid": vip["uuid"]}, {"peerL3NetworkUuid": nic["l3NetworkUuid"]})
    await push(ctx, {nic["l3NetworkUuid"]})
    return {"inventory": await ctx.inventory("PortForwardingRule", rule["uuid"])}


@api("DetachPortForwardingRule", UuidMessage, queue=by_uuid)
async def detach_port_forwarding_rule(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """Detach a port-forwarding rule from its VM NIC (the rule and its VIP stay)."""
    rule = await _rule(ctx, msg.uuid, "uuid")
    if not rule["vmNicUuid"]:
        raise OperationError(f"port forwarding rule rule[uuid:{rule['uuid']}] has not been attached to any vm nic, "
                             "can't detach")
    await unbind(ctx, "PortForwardingRule", rule, delete=False, release_vip=_release_vip)
    return {"inventory": await ctx.inventory("PortForwardingRule", rule["uuid"])}


@api("DeletePortForwardingRule", UuidDeleteMessage, queue=by_uuid)
async def delete_port_forwarding_rule(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a port-forwarding rule (its VIP is free again with its last rule); an unknown uuid succeeds (1.0)."""
    rule = await ctx.db.fetchone("SELECT * FROM PortForwardingRule WHERE uuid=?", (msg.uuid,))
    if rule is None:
        return {}
    await unbind(ctx, "PortForwardingRule", dict(rule), delete=True, release_vip=_release_vip)
    return {}


update_api("PortForwardingRule", "Change a port-forwarding rule's name or description.")


@api("ChangePortForwardingRuleState", ChangeStateMessage, queue=by_uuid)
async def change_port_forwarding_rule_state(ctx: ApiContext, msg: ChangeStateMessage) -> dict[str, Any]:
    """Enable or disable a port-forwarding rule (a Disabled rule is removed from its router, its binding kept)."""
    await update_fields(ctx, "PortForwardingRule", msg.uuid, {"state": STATE_EVENTS[msg.stateEvent]})
    rule = await _rule(ctx, msg.uuid, "uuid")
    await push(ctx, await guest_l3s_of_vip(ctx, rule["vipUuid"]))
    return {"inventory": await ctx.inventory("PortForwardingRule", msg.uuid)}


@api("GetPortForwardingAttachableVmNics", GetPortForwardingAttachableVmNicsMsg)
async def get_port_forwarding_attachable_vm_nics(ctx: ApiContext,
                                                 msg: GetPortForwardingAttachableVmNicsMsg) -> dict[str, Any]:
    """NICs a detached, Enabled rule may be attached to (1.0's query, see the module's docstring)."""
    rule = await _rule(ctx, msg.ruleUuid, "ruleUuid")
    if rule["state"] != "Enabled":
        raise OperationError(f"Port forwarding rule[uuid:{rule['uuid']}] is not in state of Enabled, current state "
                             f"is {rule['state']}")
    if rule["vmNicUuid"]:
        raise OperationError(f"Port forwarding rule[uuid:{rule['uuid']}] has been attached to vm nic"
                             f"[uuid:{rule['vmNicUuid']}] already")
    vip = await ctx.require("Vip", rule["vipUuid"], "vipUuid")
    rows = await ctx.db.fetchall(
        "SELECT n.uuid FROM VmNic n JOIN VmInstance v ON v.uuid = n.vmInstanceUuid "
        "JOIN L3Network l3 ON l3.uuid = n.l3NetworkUuid "
        "WHERE v.type='UserVm' AND v.state IN ('Running', 'Stopped') AND l3.system=0 "
        "AND l3.zoneUuid = (SELECT zoneUuid FROM L3Network WHERE uuid=?) AND n.l3NetworkUuid<>? "
        "AND (? IS NULL OR n.l3NetworkUuid = ?) "
        "AND (SELECT COUNT(*) FROM NetworkServiceL3NetworkRef r JOIN NetworkServiceProvider p "
        "     ON p.uuid = r.networkServiceProviderUuid WHERE r.l3NetworkUuid = n.l3NetworkUuid "
        "     AND r.networkServiceType IN ('PortForwarding', 'SNAT') AND p.type='VirtualRouter') = 2 "
        "AND NOT EXISTS (SELECT 1 FROM PortForwardingRule o WHERE o.vmNicUuid = n.uuid AND o.protocolType=? "
        "     AND o.privatePortStart<=? AND o.privatePortEnd>=?) "
        "ORDER BY n.createDate, n.uuid",
        (vip["l3NetworkUuid"], vip["l3NetworkUuid"], vip["peerL3NetworkUuid"], vip["peerL3NetworkUuid"],
         rule["protocolType"], rule["privatePortEnd"], rule["privatePortStart"]))
    return {"inventories": [await ctx.inventory("VmNic", r[0]) for r in rows]}


async def pf_state(db: Any, vr: dict[str, Any], guest: dict[str, Any], by_l3: dict[str, dict[str, Any]],
                   state: dict[str, Any]) -> None:
    """Add the router's port forwarding to ``state`` (vrouter.render's ``pfs``, and the ``vips`` they need):
    Enabled rules on Enabled VIPs attached to NICs of the guest L3 whose VM runs."""
    rows = await db.fetchall(
        "SELECT v.ip AS vipIp, v.netmask AS vipNetmask, v.l3NetworkUuid AS vipL3, n.ip AS guestIp, p.protocolType, "
        "p.vipPortStart, p.vipPortEnd, p.privatePortStart, p.privatePortEnd, p.allowedCidr "
        "FROM PortForwardingRule p JOIN Vip v ON v.uuid = p.vipUuid JOIN VmNic n ON n.uuid = p.vmNicUuid "
        "JOIN VmInstance vm ON vm.uuid = n.vmInstanceUuid WHERE n.l3NetworkUuid=? AND p.state='Enabled' "
        "AND v.state='Enabled' AND vm.state IN ('Starting', 'Running', 'Rebooting') "
        "ORDER BY v.ip, p.protocolType, p.vipPortStart", (guest["l3NetworkUuid"],))
    for r in rows:
        holder = by_l3.get(r["vipL3"])
        if holder is None:   # the router has no NIC on the VIP's L3 (another offering's public network)
            log.warning("router %s has no NIC on the L3 %s of vip %s: port forwarding not applied",
                        vr["uuid"], r["vipL3"], r["vipIp"])
            continue
        vips = state.setdefault("vips", [])
        if all(v["ip"] != r["vipIp"] for v in vips):
            vips.append({"ip": r["vipIp"], "nicMac": holder["mac"],
                         "prefix": ipaddress.IPv4Network(f"0.0.0.0/{r['vipNetmask']}").prefixlen})
        state.setdefault("pfs", []).append({
            "vipIp": r["vipIp"], "protocol": r["protocolType"].lower(), "guestIp": r["guestIp"],
            "vipPortStart": r["vipPortStart"], "vipPortEnd": r["vipPortEnd"],
            "privatePortStart": r["privatePortStart"], "privatePortEnd": r["privatePortEnd"],
            "allowedCidr": r["allowedCidr"], "publicNicMac": holder["mac"], "privateNicMac": guest["mac"]})


router.STATE_PARTS.append(pf_state)
