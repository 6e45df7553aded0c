"""The security-group APIs (reference security-groups.md §2), 1.0's names, fields, checks and texts.

Decisions where 1.0 was wrong or silent (reference §8):

* ICMP rules keep type (``startPort``) and code (``endPort``) as given; -1 means any. Only TCP/UDP ports are
  sorted into (min, max).
* Protocol ``ALL`` (beyond 1.0) takes no ports (absent or -1); ``remoteSecurityGroupUuid`` (beyond 1.0)
  admits the members of another group instead of a CIDR (not both).
* ``AttachSecurityGroupToL3Network`` needs the L3 to carry the ``SecurityGroup`` network service (the manual's
  rule; 1.0 did not check, and then enforced nothing at VM start). ``AddVmNicToSecurityGroup`` needs the
  NIC's L3 to be attached to the group (the manual's rule; 1.0 did not check). Adding a member twice is a
  no-op.
* ``DeleteSecurityGroupRule`` recomputes every group of the listed rules (1.0: only the first one's).
* Every change pushes the affected hosts whole rule sets (:mod:`controller.secgroup.push`); a push that fails
  never fails the call (1.0: asynchronous), the host is retried until current.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, CreateMessage, Description, Name, Uuid, UuidDeleteMessage
from controller.api.registry import api, by_uuid
from controller.errors import InvalidArgument, NotFound, OperationError
from controller.resources.checks import require
from controller.resources.common import change_state_api, create_row, update_api
from controller.secgroup import rules as R
from controller.util import new_uuid, now_iso

PROTOCOLS = ("TCP", "UDP", "ICMP", "ALL")


class SecurityGroupRuleAO(BaseModel):
    """One rule of AddSecurityGroupRule (1.0's SecurityGroupRuleAO, plus ``remoteSecurityGroupUuid``)."""

    # The schema states what check_rule enforces (type and protocol required, their values, the port bounds);
    # the handler keeps 1.0's own messages for them.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"required": ["type", "protocol"]})
    type: str | None = Field(default=None, json_schema_extra={"enum": ["Ingress", "Egress"]})
    protocol: str | None = Field(default=None, json_schema_extra={"enum": list(PROTOCOLS)})
    startPort: int | None = Field(default=None, json_schema_extra={"minimum": -1, "maximum": 65535})
    endPort: int | None = Field(default=None, json_schema_extra={"minimum": -1, "maximum": 65535})
    allowedCidr: str | None = None
    remoteSecurityGroupUuid: Uuid | None = None


class CreateSecurityGroupMsg(CreateMessage):
    name: Name
    description: Description | None = None


class AddSecurityGroupRuleMsg(ApiMessage):
    securityGroupUuid: Uuid
    rules: list[SecurityGroupRuleAO] = Field(min_length=1)


class DeleteSecurityGroupRuleMsg(ApiMessage):
    ruleUuids: list[Uuid] = Field(min_length=1)


class SecurityGroupL3Msg(ApiMessage):
    securityGroupUuid: Uuid
    l3NetworkUuid: Uuid


class VmNicsMsg(ApiMessage):
    securityGroupUuid: Uuid
    vmNicUuids: list[Uuid] = Field(min_length=1)


class GetCandidateVmNicMsg(ApiMessage):
    securityGroupUuid: Uuid


def _bad(ao: SecurityGroupRuleAO, why: str) -> InvalidArgument:
    dump = json.dumps(ao.model_dump(exclude_none=True), sort_keys=True)
    return InvalidArgument(f"{why}, rule dump: {dump}")


def _in(v: int, lo: int, hi: int) -> bool:
    return lo <= v <= hi


def _ports(ao: SecurityGroupRuleAO) -> tuple[int, int]:
    """(startPort, endPort) after 1.0's checks 3, 4 and 6 (ICMP type/code kept as given)."""
    start, end = ao.startPort, ao.endPort
    if ao.protocol == "ALL":
        if start not in (None, -1) or end not in (None, -1):
            raise _bad(ao, f"protocol ALL takes no ports, but startPort[{start}]/endPort[{end}] were given; "
                       "leave them out or give -1")
        return -1, -1
    icmp = ao.protocol == "ICMP"
    if start is None:
        raise _bad(ao, "startPort can not be null")
    if icmp and not _in(start, -1, 255):
        raise _bad(ao, f"invalid ICMP type[{start}]. Valid type is [-1, 255]")
    if not icmp and not _in(start, 0, 65535):
        raise _bad(ao, f"invalid startPort[{start}]. Valid range is [0, 65535]")
    end = start if end is None else end
    if icmp and not _in(end, -1, 3):
        raise _bad(ao, f"invalid ICMP code[{end}]. Valid range is [-1, 3]")
    if not icmp and not _in(end, 0, 65535):
        raise _bad(ao, f"invalid endPort[{end}]. Valid range is [0, 65535]")
    return (start, end) if icmp else (min(start, end), max(start, end))


def _cidr(ao: SecurityGroupRuleAO) -> str | None:
    cidr = ao.allowedCidr
    if cidr is not None:
        try:
            if "/" not in cidr:
                raise ValueError
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise _bad(ao, f"invalid CIDR[{cidr}]") from None
        if ao.remoteSecurityGroupUuid is not None:
            raise _bad(ao, "allowedCidr and remoteSecurityGroupUuid cannot both be set; a rule admits either a "
                       "CIDR or the members of a remote security group")
    if cidr is None and ao.remoteSecurityGroupUuid is None:
        cidr = R.ANY
    return cidr


def check_rule(ao: SecurityGroupRuleAO) -> dict[str, Any]:
    """1.0's checks of one rule, in 1.0's order and words (SYS.1007); returns the row values to store."""
    if ao.type is None:
        raise _bad(ao, "rule type can not be null")
    if ao.type not in ("Ingress", "Egress"):
        raise _bad(ao, f"unknown rule type[{ao.type}], rule can only be Ingress/Egress")
    if ao.protocol is None:
        raise _bad(ao, "protocol can not be null")
    if ao.protocol not in PROTOCOLS:
        raise _bad(ao, f"invalid protocol[{ao.protocol}]. Valid protocols are [{', '.join(PROTOCOLS)}]")
    start, end = _ports(ao)
    return {"type": ao.type, "protocol": ao.protocol, "startPort": start, "endPort": end, "allowedCidr": _cidr(ao),
            "remoteSecurityGroupUuid": ao.remoteSecurityGroupUuid, "state": "Enabled"}


def _pusher(ctx: ApiContext) -> Any:
    return ctx.core.services["secgroup"]


async def _sg_inv(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    return {"inventory": await ctx.inventory("SecurityGroup", uuid)}


@api("CreateSecurityGroup", CreateSecurityGroupMsg)
async def create_security_group(ctx: ApiContext, msg: CreateSecurityGroupMsg) -> dict[str, Any]:
    """Create a security group (state Enabled, no rules, attached to no L3 network)."""
    row = await create_row(ctx, "SecurityGroup", "SecurityGroupVO", msg,
                           {"name": msg.name, "description": msg.description, "state": "Enabled"})
    return await _sg_inv(ctx, row["uuid"])


update_api("SecurityGroup", "Change a security group's name or description.")
change_state_api("SecurityGroup", "Enable or disable a security group (1.0: the state is recorded only).")


@api("DeleteSecurityGroup", UuidDeleteMessage, queue=by_uuid)
async def delete_security_group(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a group with its rules, L3 attachments and memberships (and the rules of other groups that name
    it as remote group); the former members' hosts get their new sets. An unknown uuid succeeds (1.0)."""
    hosts = await R.hosts_of_membership_change(ctx.core, [msg.uuid])
    async with ctx.db.write() as tx:
        cur = await tx.execute("DELETE FROM SecurityGroup WHERE uuid=?", (msg.uuid,))
    if cur.rowcount:
        await _pusher(ctx).changed(hosts)
    return {}


@api("AddSecurityGroupRule", AddSecurityGroupRuleMsg, queue=lambda m: m.securityGroupUuid)
async def add_security_group_rule(ctx: ApiContext, msg: AddSecurityGroupRuleMsg) -> dict[str, Any]:
    """Add rules (all checked before any is written); the members' hosts enforce them."""
    values = [check_rule(ao) for ao in msg.rules]
    now = now_iso()
    async with ctx.db.write() as tx:
        await require(tx, "SecurityGroup", msg.securityGroupUuid, "securityGroupUuid")
        for v in values:
            remote = v["remoteSecurityGroupUuid"]
            if remote is not None:
                await require(tx, "SecurityGroup", remote, "remoteSecurityGroupUuid")
        for v in values:
            await tx.insert("SecurityGroupRule", {"uuid": new_uuid(), "securityGroupUuid": msg.securityGroupUuid,
                                                  **v, "createDate": now, "lastOpDate": now})
    await _pusher(ctx).changed(await R.hosts_of_groups(ctx.core, [msg.securityGroupUuid]))
    return await _sg_inv(ctx, msg.securityGroupUuid)


@api("DeleteSecurityGroupRule", DeleteSecurityGroupRuleMsg)
async def delete_security_group_rule(ctx: ApiContext, msg: DeleteSecurityGroupRuleMsg) -> dict[str, Any]:
    """Delete rules (unknown uuids are skipped); answers the group of the first rule found (1.0), or a null
    inventory when none was found. Every group that lost a rule is pushed (1.0: only the first)."""
    marks = ", ".join("?" for _ in msg.ruleUuids)
    async with ctx.db.write() as tx:
        rows = await tx.fetchall(f"SELECT uuid, securityGroupUuid FROM SecurityGroupRule WHERE uuid IN ({marks})",
                                 msg.ruleUuids)
        await tx.execute(f"DELETE FROM SecurityGroupRule WHERE uuid IN ({marks})", msg.ruleUuids)
    if not rows:
        return {"inventory": None}
    by_uuid_ = {r[0]: r[1] for r in rows}
    first = next(by_uuid_[u] for u in msg.ruleUuids if u in by_uuid_)
    await _pusher(ctx).changed(await R.hosts_of_groups(ctx.core, set(by_uuid_.values())))
    return await _sg_inv(ctx, first)


@api("AttachSecurityGroupToL3Network", SecurityGroupL3Msg, queue=lambda m: m.securityGroupUuid)
async def attach_security_group_to_l3(ctx: ApiContext, msg: SecurityGroupL3Msg) -> dict[str, Any]:
    """Let the group's rules apply to NICs of an L3 network that has the SecurityGroup service."""
    sg, l3 = msg.securityGroupUuid, msg.l3NetworkUuid
    now = now_iso()
    async with ctx.db.write() as tx:
        await require(tx, "SecurityGroup", sg, "securityGroupUuid")
        await require(tx, "L3Network", l3, "l3NetworkUuid")
        if await tx.fetchone("SELECT 1 FROM SecurityGroupL3NetworkRef WHERE securityGroupUuid=? AND "
                             "l3NetworkUuid=?", (sg, l3)):
            raise OperationError(f"security group[uuid:{sg}] has attached to l3Network[uuid:{l3}], can't attach "
                                 "again")
        if not await tx.fetchone("SELECT 1 FROM NetworkServiceL3NetworkRef WHERE l3NetworkUuid=? AND "
                                 "networkServiceType='SecurityGroup'", (l3,)):
            raise OperationError(f"l3Network[uuid:{l3}] does not have the SecurityGroup network service; attach "
                                 "it first with AttachNetworkServiceToL3Network (provider SecurityGroup)")
        await tx.insert("SecurityGroupL3NetworkRef", {"uuid": new_uuid(), "l3NetworkUuid": l3,
                                                      "securityGroupUuid": sg, "createDate": now, "lastOpDate": now})
    return await _sg_inv(ctx, sg)


@api("DetachSecurityGroupFromL3Network", SecurityGroupL3Msg, queue=lambda m: m.securityGroupUuid)
async def detach_security_group_from_l3(ctx: ApiContext, msg: SecurityGroupL3Msg) -> dict[str, Any]:
    """Remove the group's NICs of that L3 from the group, then the attachment; their hosts are pushed."""
    sg, l3 = msg.securityGroupUuid, msg.l3NetworkUuid
    await ctx.require("SecurityGroup", sg, "securityGroupUuid")
    hosts = await R.hosts_of_membership_change(ctx.core, [sg])
    async with ctx.db.write() as tx:
        cur = await tx.execute("DELETE FROM SecurityGroupL3NetworkRef WHERE securityGroupUuid=? AND l3NetworkUuid=?",
                               (sg, l3))
        if cur.rowcount == 0:
            raise OperationError(f"security group[uuid:{sg}] has not attached to l3Network[uuid:{l3}], can't detach")
        await tx.execute("DELETE FROM VmNicSecurityGroupRef WHERE securityGroupUuid=? AND vmNicUuid IN "
                         "(SELECT uuid FROM VmNic WHERE l3NetworkUuid=?)", (sg, l3))
    await _pusher(ctx).changed(hosts)
    return await _sg_inv(ctx, sg)


async def _nics(ctx: ApiContext, uuids: list[str]) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in uuids)
    rows = [dict(r) for r in await ctx.db.fetchall(f"SELECT * FROM VmNic WHERE uuid IN ({marks})", uuids)]
    missing = [u for u in dict.fromkeys(uuids) if u not in {r["uuid"] for r in rows}]
    if missing:
        raise NotFound(f"cannot find vm nics[uuids:{missing}]")
    return rows


@api("AddVmNicToSecurityGroup", VmNicsMsg, queue=lambda m: m.securityGroupUuid)
async def add_vm_nic_to_security_group(ctx: ApiContext, msg: VmNicsMsg) -> dict[str, Any]:
    """Make NICs members (their L3 must be attached to the group); members already in are skipped."""
    sg = msg.securityGroupUuid
    await ctx.require("SecurityGroup", sg, "securityGroupUuid")
    nics = await _nics(ctx, msg.vmNicUuids)
    attached = {r[0] for r in await ctx.db.fetchall("SELECT l3NetworkUuid FROM SecurityGroupL3NetworkRef WHERE "
                                                    "securityGroupUuid=?", (sg,))}
    for n in nics:
        if n["l3NetworkUuid"] not in attached:
            raise OperationError(f"vm nic[uuid:{n['uuid']}] is on l3Network[uuid:{n['l3NetworkUuid']}], which "
                                 f"security group[uuid:{sg}] is not attached to; attach it first with "
                                 "AttachSecurityGroupToL3Network", code="SG.1000")
    now = now_iso()
    async with ctx.db.write() as tx:
        await tx.executemany(
            "INSERT OR IGNORE INTO VmNicSecurityGroupRef (uuid, vmNicUuid, securityGroupUuid, vmInstanceUuid, "
            "createDate, lastOpDate) VALUES (?, ?, ?, ?, ?, ?)",
            [(new_uuid(), n["uuid"], sg, n["vmInstanceUuid"], now, now) for n in nics])
    await _pusher(ctx).changed(await R.hosts_of_membership_change(ctx.core, [sg]))
    return {}


@api("DeleteVmNicFromSecurityGroup", VmNicsMsg, queue=lambda m: m.securityGroupUuid)
async def delete_vm_nic_from_security_group(ctx: ApiContext, msg: VmNicsMsg) -> dict[str, Any]:
    """Remove NICs from the group (NICs not in it are skipped; unknown NICs are 404)."""
    sg = msg.securityGroupUuid
    await ctx.require("SecurityGroup", sg, "securityGroupUuid")
    nics = await _nics(ctx, msg.vmNicUuids)
    hosts = await R.hosts_of_membership_change(ctx.core, [sg])
    marks = ", ".join("?" for _ in nics)
    async with ctx.db.write() as tx:
        cur = await tx.execute(f"DELETE FROM VmNicSecurityGroupRef WHERE securityGroupUuid=? AND vmNicUuid IN "
                               f"({marks})", (sg, *(n["uuid"] for n in nics)))
    if cur.rowcount:
        await _pusher(ctx).changed(hosts)
    return {}


@api("GetCandidateVmNicForSecurityGroup", GetCandidateVmNicMsg)
async def get_candidate_vm_nic(ctx: ApiContext, msg: GetCandidateVmNicMsg) -> dict[str, Any]:
    """NICs of Running/Stopped user VMs on L3s attached to the group that are not members yet (1.0)."""
    sg = msg.securityGroupUuid
    await ctx.require("SecurityGroup", sg, "securityGroupUuid")
    rows = await ctx.db.fetchall(
        "SELECT n.uuid FROM VmNic n JOIN VmInstance v ON v.uuid = n.vmInstanceUuid WHERE v.type = 'UserVm' "
        "AND v.state IN ('Running', 'Stopped') AND n.l3NetworkUuid IN (SELECT l3NetworkUuid FROM "
        "SecurityGroupL3NetworkRef WHERE securityGroupUuid = ?) AND n.uuid NOT IN (SELECT vmNicUuid FROM "
        "VmNicSecurityGroupRef WHERE securityGroupUuid = ?) ORDER BY n.createDate, n.uuid", (sg, sg))
    from controller.query import get_inventories

    async with ctx.db.read() as conn:
        invs = await get_inventories(conn, "VmNic", [r[0] for r in rows])
    return {"inventories": invs}
