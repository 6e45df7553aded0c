"""Clusters: CreateCluster, UpdateCluster, ChangeClusterState, DeleteCluster (QueryCluster is generic).

Deleting a cluster removes its hosts and its attachments to primary storage and L2 networks (foreign
keys cascade); VMs keep their rows with ``clusterUuid`` cleared, as 1.0's cascade does for stopped VMs.
"""

from __future__ import annotations

from typing import Any, Literal

from controller.api.context import ApiContext
from controller.api.messages import (
    ChangeStateMessage,
    CreateMessage,
    Description,
    Name,
    UpdateMessage,
    Uuid,
    UuidDeleteMessage,
)
from controller.api.registry import api, by_uuid
from controller.db.database import Tx
from controller.resources.checks import require
from controller.resources.common import STATE_EVENTS, create_row, delete_row, update_fields


class CreateClusterMsg(CreateMessage):
    zoneUuid: Uuid
    name: Name
    description: Description | None = None
    hypervisorType: Literal["KVM", "Simulator"]
    type: Literal["zstack"] = "zstack"


@api("CreateCluster", CreateClusterMsg)
async def create_cluster(ctx: ApiContext, msg: CreateClusterMsg) -> dict[str, Any]:
    """Create a cluster in a zone."""

    async def zone_exists(tx: Tx) -> None:
        await require(tx, "Zone", msg.zoneUuid, "zoneUuid")

    row = await create_row(ctx, "Cluster", "ClusterVO", msg, {
        "name": msg.name, "description": msg.description, "state": "Enabled",
        "hypervisorType": msg.hypervisorType, "zoneUuid": msg.zoneUuid, "type": msg.type}, before=zone_exists)
    return {"inventory": await ctx.inventory("Cluster", row["uuid"])}


@api("UpdateCluster", UpdateMessage, queue=by_uuid)
async def update_cluster(ctx: ApiContext, msg: UpdateMessage) -> dict[str, Any]:
    """Change a cluster's name or description."""
    await update_fields(ctx, "Cluster", msg.uuid, {"name": msg.name, "description": msg.description})
    return {"inventory": await ctx.inventory("Cluster", msg.uuid)}


@api("ChangeClusterState", ChangeStateMessage, queue=by_uuid)
async def change_cluster_state(ctx: ApiContext, msg: ChangeStateMessage) -> dict[str, Any]:
    """Enable or disable a cluster (a Disabled cluster gets no new VMs)."""
    await update_fields(ctx, "Cluster", msg.uuid, {"state": STATE_EVENTS[msg.stateEvent]})
    return {"inventory": await ctx.inventory("Cluster", msg.uuid)}


@api("DeleteCluster", UuidDeleteMessage, queue=by_uuid)
async def delete_cluster(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a cluster, its hosts and its attachments; an unknown uuid succeeds (1.0)."""
    await delete_row(ctx, "Cluster", msg.uuid)
    return {}
