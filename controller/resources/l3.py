"""L3 networks: CreateL3Network, UpdateL3Network, ChangeL3NetworkState, DeleteL3Network and their DNS list.

* ``zoneUuid`` is taken from the L2 network; ``dnsDomain`` must be a valid domain name.
* ``dns`` keeps the order of addition (``L3NetworkDns.position``); a DNS must be an IPv4 address and may
  appear once (a duplicate is 409 SYS.1006, 1.0's "there has been a DNS[..]"). Removing a DNS the L3 does
  not have succeeds without change, as in 1.0.
* Deleting an L3 network removes its ranges, used IPs, DNS and service references (foreign keys cascade)
  and its tags. With ``deleteMode=Permissive`` it is refused (409) while VM NICs are on it; ``Enforcing``
  deletes anyway (NICs keep their rows, ``l3NetworkUuid`` and ``usedIpUuid`` cleared). 1.0 ran VM cascade
  extensions instead; refusing keeps VMs intact until an operator decides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import (
    DOMAIN_SCHEMA,
    ApiMessage,
    CreateMessage,
    Description,
    IPv4,
    Name,
    Uuid,
    UuidDeleteMessage,
)
from controller.api.registry import api, by_uuid
from controller.db.database import Tx
from controller.errors import InvalidArgument, OperationError
from controller.resources.checks import require
from controller.resources.common import change_state_api, create_row, update_api
from controller.tags.service import is_domain
from controller.util import now_iso


class CreateL3NetworkMsg(CreateMessage):
    name: Name
    description: Description | None = None
    l2NetworkUuid: Uuid
    type: Literal["L3BasicNetwork"] = "L3BasicNetwork"
    system: bool = False
    dnsDomain: str | None = Field(default=None, json_schema_extra=DOMAIN_SCHEMA)


class DnsMsg(ApiMessage):
    l3NetworkUuid: Uuid
    dns: IPv4


async def refuse_if_nics(tx: Tx, l3_select: str, params: Sequence[Any], what: str) -> None:
    """409 when a VM NIC is on one of the L3 networks selected by ``l3_select`` (SQL from code)."""
    row = await tx.fetchone(f"SELECT COUNT(*), MIN(vmInstanceUuid) FROM VmNic WHERE l3NetworkUuid IN ({l3_select})",
                            params)
    if row is not None and row[0]:
        raise OperationError(f"{what} is used by {row[0]} VM NIC(s) (e.g. of VM[uuid:{row[1]}]); delete those VMs "
                             "or their NICs first, or use deleteMode=Enforcing")


@api("CreateL3Network", CreateL3NetworkMsg)
async def create_l3(ctx: ApiContext, msg: CreateL3NetworkMsg) -> dict[str, Any]:
    """Create an L3 network on an L2 network (in the L2's zone)."""
    if msg.dnsDomain is not None and not is_domain(msg.dnsDomain):
        raise InvalidArgument(f"invalid field[dnsDomain]: {msg.dnsDomain} is not a valid domain name")
    l2 = await ctx.require("L2Network", msg.l2NetworkUuid, "l2NetworkUuid")

    async def l2_still_exists(tx: Tx) -> None:
        # an L2's zone never changes, so only its existence needs the transaction's snapshot
        await require(tx, "L2Network", msg.l2NetworkUuid, "l2NetworkUuid")

    row = await create_row(ctx, "L3Network", "L3NetworkVO", msg, {
        "name": msg.name, "description": msg.description, "type": msg.type, "zoneUuid": l2["zoneUuid"],
        "l2NetworkUuid": msg.l2NetworkUuid, "state": "Enabled", "dnsDomain": msg.dnsDomain,
        "system": 1 if msg.system else 0}, before=l2_still_exists)
    return {"inventory": await ctx.inventory("L3Network", row["uuid"])}


update_api("L3Network", "Change an L3 network's name or description.")
change_state_api("L3Network", "Enable or disable an L3 network (a Disabled one gets no new VM NICs).")


@api("DeleteL3Network", UuidDeleteMessage, queue=by_uuid)
async def delete_l3(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete an L3 network with its ranges and IPs; an unknown uuid succeeds (1.0)."""
    async with ctx.db.write() as tx:
        if msg.deleteMode == "Permissive":
            await refuse_if_nics(tx, "?", (msg.uuid,), f"L3 network[uuid:{msg.uuid}]")
        await tx.execute("DELETE FROM L3Network WHERE uuid=?", (msg.uuid,))
    return {}


@api("AddDnsToL3Network", DnsMsg, queue=lambda m: m.l3NetworkUuid)
async def add_dns(ctx: ApiContext, msg: DnsMsg) -> dict[str, Any]:
    """Append a DNS server (IPv4) to an L3 network's list."""
    try:
        ipaddress.IPv4Address(msg.dns)
    except ValueError:
        raise InvalidArgument(f"invalid field[dns]: dns[{msg.dns}] is not a IPv4 address") from None
    async with ctx.db.write() as tx:
        await require(tx, "L3Network", msg.l3NetworkUuid, "l3NetworkUuid")
        if await tx.fetchone("SELECT 1 FROM L3NetworkDns WHERE l3NetworkUuid=? AND dns=?",
                             (msg.l3NetworkUuid, msg.dns)):
            raise OperationError(f"there has been a DNS[{msg.dns}] on L3 network[uuid:{msg.l3NetworkUuid}]")
        pos = await tx.fetchone("SELECT COALESCE(MAX(position), -1) + 1 FROM L3NetworkDns WHERE l3NetworkUuid=?",
                                (msg.l3NetworkUuid,))
        await tx.insert("L3NetworkDns", {"l3NetworkUuid": msg.l3NetworkUuid, "dns": msg.dns,
                                         "position": pos[0] if pos else 0, "createDate": now_iso()})
        await tx.update("L3Network", {"uuid": msg.l3NetworkUuid}, {"lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("L3Network", msg.l3NetworkUuid)}


@api("RemoveDnsFromL3Network", DnsMsg, queue=lambda m: m.l3NetworkUuid)
async def remove_dns(ctx: ApiContext, msg: DnsMsg) -> dict[str, Any]:
    """Remove a DNS server from an L3 network (absent: success, nothing changes)."""
    async with ctx.db.write() as tx:
        await require(tx, "L3Network", msg.l3NetworkUuid, "l3NetworkUuid")
        cur = await tx.execute("DELETE FROM L3NetworkDns WHERE l3NetworkUuid=? AND dns=?",
                               (msg.l3NetworkUuid, msg.dns))
        if cur.rowcount:
            await tx.update("L3Network", {"uuid": msg.l3NetworkUuid}, {"lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("L3Network", msg.l3NetworkUuid)}
