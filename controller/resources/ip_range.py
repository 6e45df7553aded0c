"""IP ranges of L3 networks: AddIpRange, AddIpRangeByNetworkCidr, UpdateIpRange, DeleteIpRange, and the
helpers GetFreeIp and CheckIpAvailability.

Rules of AddIpRange (1.0, texts kept): startIp, endIp and gateway are IPv4 addresses, netmask is a real
netmask (not 0.0.0.0), start <= end, end and gateway are in the subnet of startIp/netmask, the range holds
neither the network nor the broadcast address (for prefixes up to /30), the gateway is outside the range,
and the range overlaps no other range of the L3 (checked inside the inserting transaction, so concurrent
adds cannot both pass). ``networkCidr``, ``startInt`` and ``endInt`` are filled in.

AddIpRangeByNetworkCidr: gateway = first usable address, range = gateway+1 .. last usable address.

DeleteIpRange removes the range's used IPs (cascade) and the L3's flat DHCP server tag when its IP was
in the range (reference §3.2: a new one is allocated on next use). With ``deleteMode=Permissive`` it is
refused (409) while VM NICs hold addresses of the range; ``Enforcing`` deletes and clears those NICs'
ip/netmask/gateway/usedIpUuid. 1.0 deleted the range and ran VM cascade extensions instead.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import ConfigDict, Field

from controller.api.context import ApiContext
from controller.api.messages import (
    IPV4_SCHEMA,
    ApiMessage,
    CreateMessage,
    Description,
    IPv4,
    Name,
    Netmask,
    Uuid,
    UuidDeleteMessage,
)
from controller.api.registry import api, by_uuid
from controller.db.database import Tx
from controller.errors import InvalidArgument, OperationError
from controller.resources import ipam
from controller.resources.checks import ip_str, ipv4, netmask, require
from controller.resources.common import create_row, update_api


class AddIpRangeMsg(CreateMessage):
    l3NetworkUuid: Uuid
    name: Name
    description: Description | None = None
    startIp: IPv4
    endIp: IPv4
    netmask: Netmask
    gateway: IPv4


class AddIpRangeByNetworkCidrMsg(CreateMessage):
    l3NetworkUuid: Uuid
    name: Name
    description: Description | None = None
    networkCidr: str = Field(json_schema_extra={
        "pattern": IPV4_SCHEMA["pattern"][:-1] + "/([1-9]|[12][0-9]|30)$",
        "description": "an IPv4 network with a prefix of at most 30 (e.g. 192.168.1.0/24)"})


class GetFreeIpMsg(ApiMessage):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": ["l3NetworkUuid"], "properties": {"l3NetworkUuid": {"type": "string"}}},
                  {"required": ["ipRangeUuid"], "properties": {"ipRangeUuid": {"type": "string"}}}]})

    l3NetworkUuid: Uuid | None = None
    ipRangeUuid: Uuid | None = None
    start: IPv4 | None = None
    limit: int = Field(default=100, ge=1, le=10000)


class CheckIpAvailabilityMsg(ApiMessage):
    l3NetworkUuid: Uuid
    ip: IPv4


def range_row(start_ip: str, end_ip: str, mask: str, gateway: str) -> dict[str, Any]:
    """Validate one IPv4 range (1.0's rules) and return its IpRange columns."""
    s, e, g = ipv4(start_ip, "startIp"), ipv4(end_ip, "endIp"), ipv4(gateway, "gateway")
    prefix = netmask(mask)
    if s > e:
        raise InvalidArgument(f"start ip[{start_ip}] is behind end ip[{end_ip}]")
    net = ipaddress.IPv4Network(f"{start_ip}/{prefix}", strict=False)
    if ipaddress.IPv4Address(g) not in net:
        raise InvalidArgument(f"the gateway[{gateway}] is not in the subnet {start_ip}/{mask}")
    if ipaddress.IPv4Address(e) not in net:
        raise InvalidArgument(f"the endip[{end_ip}] is not in the subnet {start_ip}/{mask}")
    if prefix <= 30 and (s == int(net.network_address) or e == int(net.broadcast_address)):
        raise InvalidArgument(f"the IP range[{start_ip} ~ {end_ip}] contains the network address "
                              f"{net.network_address} or the broadcast address {net.broadcast_address} of {net}")
    if s <= g <= e:
        raise InvalidArgument(f"gateway[{gateway}] can not be part of range[{start_ip}, {end_ip}]")
    return {"startIp": start_ip, "endIp": end_ip, "netmask": mask, "gateway": gateway,
            "networkCidr": str(net), "startInt": s, "endInt": e}


async def _add(ctx: ApiContext, msg: CreateMessage, l3_uuid: str, name: str, description: str | None,
               cols: dict[str, Any]) -> dict[str, Any]:
    async def no_overlap(tx: Tx) -> None:
        await require(tx, "L3Network", l3_uuid, "l3NetworkUuid")
        other = await tx.fetchone("SELECT uuid, startIp, endIp FROM IpRange WHERE l3NetworkUuid=? AND startInt<=? "
                                  "AND endInt>=? LIMIT 1", (l3_uuid, cols["endInt"], cols["startInt"]))
        if other is not None:
            raise InvalidArgument(f"new ip range[{cols['startIp']} ~ {cols['endIp']}] overlaps with ip "
                                  f"range[uuid:{other['uuid']}, start ip:{other['startIp']}, end ip: "
                                  f"{other['endIp']}] of L3 network[uuid:{l3_uuid}]")

    row = await create_row(ctx, "IpRange", "IpRangeVO", msg, {
        "name": name, "description": description, "l3NetworkUuid": l3_uuid, **cols}, before=no_overlap)
    return {"inventory": await ctx.inventory("IpRange", row["uuid"])}


@api("AddIpRange", AddIpRangeMsg, queue=lambda m: m.l3NetworkUuid)
async def add_ip_range(ctx: ApiContext, msg: AddIpRangeMsg) -> dict[str, Any]:
    """Add an IPv4 range (start, end, netmask, gateway) to an L3 network."""
    cols = range_row(msg.startIp, msg.endIp, msg.netmask, msg.gateway)
    return await _add(ctx, msg, msg.l3NetworkUuid, msg.name, msg.description, cols)


@api("AddIpRangeByNetworkCidr", AddIpRangeByNetworkCidrMsg, queue=lambda m: m.l3NetworkUuid)
async def add_ip_range_by_cidr(ctx: ApiContext, msg: AddIpRangeByNetworkCidrMsg) -> dict[str, Any]:
    """Add the whole of a CIDR: gateway = first usable address, range = the rest of the usable ones."""
    try:
        net = ipaddress.IPv4Network(msg.networkCidr, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid field[networkCidr]: {msg.networkCidr} is not a valid network cidr "
                              "(e.g. 192.168.1.0/24)") from None
    if net.prefixlen > 30:
        raise InvalidArgument(f"{msg.networkCidr} is not an allowed network cidr, because it doesn't have usable "
                              "ip range")
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    cols = range_row(ip_str(first + 1), ip_str(last), str(net.netmask), ip_str(first))
    return await _add(ctx, msg, msg.l3NetworkUuid, msg.name, msg.description, cols)


update_api("IpRange", "Change an IP range's name or description.")


@api("DeleteIpRange", UuidDeleteMessage, queue=by_uuid)
async def delete_ip_range(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete an IP range and its used IPs; an unknown uuid succeeds (1.0)."""
    async with ctx.db.write() as tx:
        rng = await tx.fetchone("SELECT l3NetworkUuid FROM IpRange WHERE uuid=?", (msg.uuid,))
        if rng is None:
            return {}
        nics = await tx.fetchone("SELECT COUNT(*), MIN(n.vmInstanceUuid) FROM VmNic n JOIN UsedIp u ON "
                                 "u.uuid=n.usedIpUuid WHERE u.ipRangeUuid=?", (msg.uuid,))
        if nics is not None and nics[0]:
            if msg.deleteMode == "Permissive":
                raise OperationError(f"IP range[uuid:{msg.uuid}] has {nics[0]} address(es) used by VM NICs (e.g. of "
                                     f"VM[uuid:{nics[1]}]); delete those VMs first or use deleteMode=Enforcing")
            await tx.execute("UPDATE VmNic SET ip=NULL, netmask=NULL, gateway=NULL, usedIpUuid=NULL WHERE usedIpUuid "
                             "IN (SELECT uuid FROM UsedIp WHERE ipRangeUuid=?)", (msg.uuid,))
        used = [r[0] for r in await tx.fetchall("SELECT uuid FROM UsedIp WHERE ipRangeUuid=?", (msg.uuid,))]
        await tx.executemany("DELETE FROM SystemTag WHERE resourceUuid=? AND tag LIKE 'flatNetwork::DhcpServer::%' "
                             "AND tag LIKE ?", [(rng[0], f"%::ipUuid::{u}") for u in used])
        await tx.execute("DELETE FROM IpRange WHERE uuid=?", (msg.uuid,))
    return {}


@api("GetFreeIp", GetFreeIpMsg)
async def get_free_ip(ctx: ApiContext, msg: GetFreeIpMsg) -> dict[str, Any]:
    """Up to ``limit`` free addresses of an L3 network or of one range, from ``start`` on."""
    if msg.ipRangeUuid is not None:
        r = await ctx.require("IpRange", msg.ipRangeUuid, "ipRangeUuid")
        l3_uuid = r["l3NetworkUuid"]
        ranges = [x for x in await ipam.ranges_of(ctx.db.fetchall, l3_uuid) if x["uuid"] == msg.ipRangeUuid]
    elif msg.l3NetworkUuid is not None:
        await ctx.require("L3Network", msg.l3NetworkUuid, "l3NetworkUuid")
        l3_uuid = msg.l3NetworkUuid
        ranges = await ipam.ranges_of(ctx.db.fetchall, l3_uuid)
    else:
        raise InvalidArgument("field[l3NetworkUuid] or field[ipRangeUuid] of message[GetFreeIp] must be set")
    start = ipv4(msg.start, "start") if msg.start else 0
    return {"inventories": await ipam.free_ips(ctx.db.fetchall, l3_uuid, ranges, start, msg.limit)}


@api("CheckIpAvailability", CheckIpAvailabilityMsg)
async def check_ip_availability(ctx: ApiContext, msg: CheckIpAvailabilityMsg) -> dict[str, Any]:
    """``available`` is true when ``ip`` is in a range of the L3 network and not used."""
    await ctx.require("L3Network", msg.l3NetworkUuid, "l3NetworkUuid")
    n = ipv4(msg.ip, "ip")
    in_range = await ctx.db.fetchone("SELECT 1 FROM IpRange WHERE l3NetworkUuid=? AND startInt<=? AND endInt>=?",
                                     (msg.l3NetworkUuid, n, n))
    used = await ctx.db.fetchone("SELECT 1 FROM UsedIp WHERE l3NetworkUuid=? AND ipInLong=?", (msg.l3NetworkUuid, n))
    return {"available": in_range is not None and used is None}
