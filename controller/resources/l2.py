"""L2 networks: CreateL2NoVlanNetwork, CreateL2VlanNetwork, attach/detach to clusters, update, delete.

Guarantees:

* Creation writes, in ONE transaction: the L2 row, the inherent system tag ``kvm::bridge::<name>``
  (``br_<iface>`` for NoVlan, ``br_<iface>_<vlan>`` for Vlan: the bridge every host of an attached
  cluster will carry) and the references of the network service providers that support the L2's type
  (reference §3.1: Flat, VirtualRouter and SecurityGroup for both types).
* Attaching is refused (400 SYS.1007) when already attached, when the cluster is in another zone, or
  when another L2 on the same bridge (same physicalInterface for NoVlan, same interface and vlan for
  Vlan) is attached to that cluster. Records only: creating the bridge on the hosts comes with the host
  connect sequence.
* Deleting removes the L2's L3 networks, ranges, IPs and attachments (foreign keys cascade) and its tags
  (triggers). With ``deleteMode=Permissive`` it is refused (409) while VM NICs are on one of its L3
  networks; ``Enforcing`` deletes anyway (the NICs keep their rows with ``l3NetworkUuid`` cleared).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, CreateMessage, Description, Name, UpdateMessage, Uuid, UuidDeleteMessage
from controller.api.registry import api, by_uuid
from controller.db.database import Tx
from controller.errors import InvalidArgument
from controller.resources.checks import interface_name, require
from controller.resources.common import create_row, update_fields
from controller.resources.l3 import refuse_if_nics
from controller.resources.network_service import reference_providers
from controller.util import now_iso

NOVLAN, VLAN = "L2NoVlanNetwork", "L2VlanNetwork"


class CreateL2NoVlanNetworkMsg(CreateMessage):
    name: Name
    description: Description | None = None
    zoneUuid: Uuid
    # The schema states the bridge limit too: br_<iface> is at most 15 characters.
    physicalInterface: str = Field(min_length=1, max_length=15, json_schema_extra={
        "maxLength": 12, "pattern": r"^[A-Za-z0-9_.\-]+$"})


class CreateL2VlanNetworkMsg(CreateL2NoVlanNetworkMsg):
    vlan: int = Field(ge=0, le=4095)
    # br_<iface>_<vlan> is at most 15 characters: with a 4-digit vlan, the interface has 7.
    physicalInterface: str = Field(min_length=1, max_length=15, json_schema_extra={
        "maxLength": 7, "pattern": r"^[A-Za-z0-9_.\-]+$"})


class L2ClusterMsg(ApiMessage):
    l2NetworkUuid: Uuid
    clusterUuid: Uuid


def bridge_name(physical_interface: str, vlan: int | None) -> str:
    """The KVM bridge of an L2 (1.0's rule): ``br_<iface>`` or ``br_<iface>_<vlan>``."""
    return f"br_{physical_interface}" if vlan is None else f"br_{physical_interface}_{vlan}"


async def l2_inventory(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    """The L2 inventory in its type's shape (``vlan`` only for L2VlanNetwork)."""
    found = await ctx.db.fetchone("SELECT type FROM L2Network WHERE uuid=?", (uuid,))
    kind = found["type"] if found else "L2Network"
    return await ctx.inventory(kind if kind in (NOVLAN, VLAN) else "L2Network", uuid)


async def _create(ctx: ApiContext, msg: CreateL2NoVlanNetworkMsg, kind: str, vlan: int | None) -> dict[str, Any]:
    interface_name(msg.physicalInterface, "physicalInterface")
    bridge = bridge_name(msg.physicalInterface, vlan)
    if len(bridge) > 15:
        raise InvalidArgument(f"the bridge name[{bridge}] made of physicalInterface[{msg.physicalInterface}]"
                              + (f" and vlan[{vlan}]" if vlan is not None else "")
                              + " is longer than 15 characters, the Linux limit; use a shorter interface name")
    tags = ctx.core.services["tags"]

    async def zone_exists(tx: Tx) -> None:
        await require(tx, "Zone", msg.zoneUuid, "zoneUuid")

    async def bridge_and_providers(tx: Tx, row: dict[str, Any]) -> None:
        await tags.write(tx, "L2NetworkVO", row["uuid"], f"kvm::bridge::{bridge}", system=True, inherent=True)
        await reference_providers(tx, row["uuid"], kind)

    row = await create_row(ctx, "L2Network", "L2NetworkVO", msg, {
        "name": msg.name, "description": msg.description, "zoneUuid": msg.zoneUuid,
        "physicalInterface": msg.physicalInterface, "type": kind, "vlan": vlan},
        before=zone_exists, after=bridge_and_providers)
    return {"inventory": await ctx.inventory(kind, row["uuid"])}


@api("CreateL2NoVlanNetwork", CreateL2NoVlanNetworkMsg)
async def create_l2_novlan(ctx: ApiContext, msg: CreateL2NoVlanNetworkMsg) -> dict[str, Any]:
    """Create an L2 network bridged straight onto a host interface."""
    return await _create(ctx, msg, NOVLAN, None)


@api("CreateL2VlanNetwork", CreateL2VlanNetworkMsg)
async def create_l2_vlan(ctx: ApiContext, msg: CreateL2VlanNetworkMsg) -> dict[str, Any]:
    """Create an L2 network on a VLAN (0-4095) of a host interface."""
    return await _create(ctx, msg, VLAN, msg.vlan)


async def _check_attach(tx: Tx, l2: dict[str, Any], cluster: dict[str, Any]) -> None:
    if l2["zoneUuid"] != cluster["zoneUuid"]:
        raise InvalidArgument(f"l2Network[uuid:{l2['uuid']}] is in zone[uuid:{l2['zoneUuid']}] but "
                              f"cluster[uuid:{cluster['uuid']}] is in zone[uuid:{cluster['zoneUuid']}]")
    if await tx.fetchone("SELECT 1 FROM L2NetworkClusterRef WHERE l2NetworkUuid=? AND clusterUuid=?",
                         (l2["uuid"], cluster["uuid"])):
        raise InvalidArgument(f"l2Network[uuid:{l2['uuid']}] has attached to cluster[uuid:{cluster['uuid']}], "
                              "can't attach again")
    other = await tx.fetchone(
        "SELECT l.uuid, l.name FROM L2NetworkClusterRef r JOIN L2Network l ON l.uuid=r.l2NetworkUuid "
        "WHERE r.clusterUuid=? AND l.type=? AND l.physicalInterface=? AND l.vlan IS ?",
        (cluster["uuid"], l2["type"], l2["physicalInterface"], l2["vlan"]))
    if other is not None:
        what = f"physical interface[{l2['physicalInterface']}]"
        if l2["type"] == VLAN:
            what += f", vlan[{l2['vlan']}]"
        raise InvalidArgument(f"There has been a {l2['type']}[uuid:{other['uuid']}, name:{other['name']}] "
                              f"attached to cluster[uuid:{cluster['uuid']}] that has {what}. Failed to attach "
                              f"{l2['type']}[uuid:{l2['uuid']}]")


@api("AttachL2NetworkToCluster", L2ClusterMsg, queue=lambda m: m.clusterUuid)
async def attach_l2(ctx: ApiContext, msg: L2ClusterMsg) -> dict[str, Any]:
    """Attach an L2 network to a cluster (its hosts will carry the L2's bridge)."""
    async with ctx.db.write() as tx:
        l2 = await require(tx, "L2Network", msg.l2NetworkUuid, "l2NetworkUuid")
        cluster = await require(tx, "Cluster", msg.clusterUuid, "clusterUuid")
        await _check_attach(tx, l2, cluster)
        await tx.insert("L2NetworkClusterRef", {"l2NetworkUuid": l2["uuid"], "clusterUuid": cluster["uuid"],
                                                "createDate": now_iso()})
    return {"inventory": await l2_inventory(ctx, msg.l2NetworkUuid)}


@api("DetachL2NetworkFromCluster", L2ClusterMsg, queue=lambda m: m.clusterUuid)
async def detach_l2(ctx: ApiContext, msg: L2ClusterMsg) -> dict[str, Any]:
    """Detach an L2 network from a cluster."""
    async with ctx.db.write() as tx:
        await require(tx, "L2Network", msg.l2NetworkUuid, "l2NetworkUuid")
        await require(tx, "Cluster", msg.clusterUuid, "clusterUuid")
        cur = await tx.execute("DELETE FROM L2NetworkClusterRef WHERE l2NetworkUuid=? AND clusterUuid=?",
                               (msg.l2NetworkUuid, msg.clusterUuid))
        if cur.rowcount == 0:
            raise InvalidArgument(f"l2Network[uuid:{msg.l2NetworkUuid}] has not attached to "
                                  f"cluster[uuid:{msg.clusterUuid}]")
    return {"inventory": await l2_inventory(ctx, msg.l2NetworkUuid)}


@api("UpdateL2Network", UpdateMessage, queue=by_uuid)
async def update_l2(ctx: ApiContext, msg: UpdateMessage) -> dict[str, Any]:
    """Change an L2 network's name or description."""
    await update_fields(ctx, "L2Network", msg.uuid, {"name": msg.name, "description": msg.description})
    return {"inventory": await l2_inventory(ctx, msg.uuid)}


@api("DeleteL2Network", UuidDeleteMessage, queue=by_uuid)
async def delete_l2(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete an L2 network with its L3 networks; an unknown uuid succeeds (1.0)."""
    async with ctx.db.write() as tx:
        if msg.deleteMode == "Permissive":
            await refuse_if_nics(tx, "SELECT uuid FROM L3Network WHERE l2NetworkUuid=?", (msg.uuid,),
                                 f"L2 network[uuid:{msg.uuid}]")
        await tx.execute("DELETE FROM L2Network WHERE uuid=?", (msg.uuid,))
    return {}
