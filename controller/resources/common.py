"""Shared steps of resource APIs: create with tags, update name/description, change state, delete.

Resources whose Update / Change*State / Delete APIs have nothing of their own register them with
:func:`update_api`, :func:`change_state_api` and :func:`delete_api`; a handler with its own checks or
side effects (a Permissive delete that refuses, a cascade in code) stays explicit in its module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, ChangeStateMessage, CreateMessage, UpdateMessage, UuidDeleteMessage
from controller.api.registry import Handler, api, by_uuid
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


def _register(name: str, model: type[ApiMessage], doc: str, fn: Handler) -> Handler:
    fn.__doc__ = doc
    fn.__name__ = fn.__qualname__ = name
    return api(name, model, queue=by_uuid)(fn)


def update_api(table: str, doc: str) -> Handler:
    """Register ``Update<table>`` (``doc`` is its summary): the given name/description are written, the
    inventory of ``table`` is answered; an unknown uuid is 404 SYS.1003. Runs in the resource's queue."""

    async def update(ctx: ApiContext, msg: UpdateMessage) -> dict[str, Any]:
        await update_fields(ctx, table, msg.uuid, {"name": msg.name, "description": msg.description})
        return {"inventory": await ctx.inventory(table, msg.uuid)}

    return _register(f"Update{table}", UpdateMessage, doc, update)


def change_state_api(table: str, doc: str, *, model: type[ApiMessage] = ChangeStateMessage,
                     events: Mapping[str, str] = STATE_EVENTS) -> Handler:
    """Register ``Change<table>State``: ``stateEvent`` (validated by ``model``) becomes ``events[stateEvent]``
    in the state column, the inventory is answered; an unknown uuid is 404 SYS.1003. Runs in the queue."""

    async def change_state(ctx: ApiContext, msg: Any) -> dict[str, Any]:
        await update_fields(ctx, table, msg.uuid, {"state": events[msg.stateEvent]})
        return {"inventory": await ctx.inventory(table, msg.uuid)}

    return _register(f"Change{table}State", model, doc, change_state)


def delete_api(table: str, doc: str) -> Handler:
    """Register ``Delete<table>``: :func:`delete_row` (children go by foreign-key cascade, an unknown uuid
    succeeds as in 1.0), answers ``{}``; ``deleteMode`` changes nothing. Runs in the resource's queue."""

    async def delete(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
        await delete_row(ctx, table, msg.uuid)
        return {}

    return _register(f"Delete{table}", UuidDeleteMessage, doc, delete)
