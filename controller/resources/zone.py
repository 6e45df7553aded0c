"""Zones: CreateZone, UpdateZone, ChangeZoneState, DeleteZone (QueryZone is generic)."""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import (
    ChangeStateMessage,
    CreateMessage,
    Description,
    Name,
    UpdateMessage,
    UuidDeleteMessage,
)
from controller.api.registry import api, by_uuid
from controller.resources.common import STATE_EVENTS, create_row, delete_row, update_fields


class CreateZoneMsg(CreateMessage):
    name: Name
    description: Description | None = None


@api("CreateZone", CreateZoneMsg)
async def create_zone(ctx: ApiContext, msg: CreateZoneMsg) -> dict[str, Any]:
    """Create a zone."""
    row = await create_row(ctx, "Zone", "ZoneVO", msg, {"name": msg.name, "description": msg.description,
                                                          "state": "Enabled", "type": "zstack"})
    return {"inventory": await ctx.inventory("Zone", row["uuid"])}


@api("UpdateZone", UpdateMessage, queue=by_uuid)
async def update_zone(ctx: ApiContext, msg: UpdateMessage) -> dict[str, Any]:
    """Change a zone's name or description."""
    await update_fields(ctx, "Zone", msg.uuid, {"name": msg.name, "description": msg.description})
    return {"inventory": await ctx.inventory("Zone", msg.uuid)}


@api("ChangeZoneState", ChangeStateMessage, queue=by_uuid)
async def change_zone_state(ctx: ApiContext, msg: ChangeStateMessage) -> dict[str, Any]:
    """Enable or disable a zone."""
    await update_fields(ctx, "Zone", msg.uuid, {"state": STATE_EVENTS[msg.stateEvent]})
    return {"inventory": await ctx.inventory("Zone", msg.uuid)}


@api("DeleteZone", UuidDeleteMessage, queue=by_uuid)
async def delete_zone(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a zone and everything in it (clusters, networks, storage records)."""
    await delete_row(ctx, "Zone", msg.uuid)
    return {}
