"""Clusters: CreateCluster, UpdateCluster, ChangeClusterState, DeleteCluster (QueryCluster is generic).

Deleting a cluster removes its hosts and its attachments to primary storage and L2 networks (foreign
keys cascade); VMs keep their rows with ``clusterUuid`` cleared, as 1.0's cascade does for stopped VMs.
"""

from __future__ import annotations

from typing import Any, Literal

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name, Uuid
from controller.api.registry import api
from controller.db.database import Tx
from controller.resources.checks import require
from controller.resources.common import change_state_api, create_row, delete_api, update_api


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


update_api("Cluster", "Change a cluster's name or description.")
change_state_api("Cluster", "Enable or disable a cluster (a Disabled cluster gets no new VMs).")
delete_api("Cluster", "Delete a cluster, its hosts and its attachments; an unknown uuid succeeds (1.0).")
