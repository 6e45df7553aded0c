"""Shared steps of resource APIs: create with tags, update name/description, change state, delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage
from controller.db.database import Tx
from controller.errors import InvalidArgument, NotFound
from controller.util import new_uuid, now_iso


async def create_row(ctx: ApiContext, table: str, resource_type: str, msg: CreateMessage,
                     row: dict[str, Any], *, before: Callable[[Tx], Awaitable[None]] | None = None,
                     after: Callable[[Tx, dict[str, Any]], Awaitable[None]] | None = None) -> dict[str, Any]:
    """Insert ``row`` (uuid and dates filled in) with the message's tags in ONE transaction and return
    the new row. Tags are validated before anything is written. ``before(tx)`` runs first inside the
    transaction (checks that must see the same snapshot as the insert: parents exist, no duplicate);
    ``after(tx, row)`` runs after the insert (child rows, inherent tags). Any exception rolls back all."""
    tags = ctx.core.services["tags"]
    await tags.validate_create_tags(resource_type, msg.systemTags)
    now = now_iso()
    row = {"uuid": msg.resourceUuid or new_uuid(), **row, "createDate": now, "lastOpDate": now}
    async with ctx.db.write() as tx:
        if msg.resourceUuid and await tx.fetchone(f"SELECT 1 FROM {table} WHERE uuid=?", (msg.resourceUuid,)):
            raise InvalidArgument(f"invalid field[resourceUuid]: {table}[uuid:{msg.resourceUuid}] already "
                                  "exists; give another uuid or none")
        if before is not None:
            await before(tx)
        await tx.insert(table, row)
        if after is not None:
            await after(tx, row)
        await tags.write_create_tags(tx, resource_type, row["uuid"], msg.systemTags, msg.userTags)
    return row


async def update_fields(ctx: ApiContext, table: str, uuid: str, values: dict[str, Any], *,
                        vo: str | None = None) -> None:
    """Update the given non-None fields of one row (SYS.1003 when it does not exist)."""
    values = {k: v for k, v in values.items() if v is not None}
    async with ctx.db.write() as tx:
        n = await tx.update(table, {"uuid": uuid}, {**values, "lastOpDate": now_iso()})
    if n == 0:
        raise NotFound(f"invalid field[uuid], resource[uuid:{uuid}, type:{vo or table + 'VO'}] not found")


STATE_EVENTS = {"enable": "Enabled", "disable": "Disabled"}


async def delete_row(ctx: ApiContext, table: str, uuid: str) -> bool:
    """Delete one row (children cascade, tags go with it by trigger). Missing rows are not an error
    (1.0: deleting an unknown uuid succeeds)."""
    async with ctx.db.write() as tx:
        cur = await tx.execute(f"DELETE FROM {table} WHERE uuid=?", (uuid,))
    return cur.rowcount > 0
