"""Zones: CreateZone, UpdateZone, ChangeZoneState, DeleteZone (QueryZone is generic)."""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name
from controller.api.registry import api
from controller.resources.common import change_state_api, create_row, delete_api, update_api


class CreateZoneMsg(CreateMessage):
    name: Name
    description: Description | None = None


@api("CreateZone", CreateZoneMsg)
async def create_zone(ctx: ApiContext, msg: CreateZoneMsg) -> dict[str, Any]:
    """Create a zone."""
    row = await create_row(ctx, "Zone", "ZoneVO", msg, {"name": msg.name, "description": msg.description,
                                                          "state": "Enabled", "type": "zstack"})
    return {"inventory": await ctx.inventory("Zone", row["uuid"])}


update_api("Zone", "Change a zone's name or description.")
change_state_api("Zone", "Enable or disable a zone.")
delete_api("Zone", "Delete a zone and everything in it (clusters, networks, storage records).")
