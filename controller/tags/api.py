"""Tag APIs: CreateSystemTag, CreateUserTag, UpdateSystemTag, DeleteTag (queries are generic)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, DeleteMessage, Uuid
from controller.api.registry import api
from controller.core import Controller, on_start
from controller.errors import NotFound, OperationError
from controller.tags.service import RESOURCE_TYPES, Tags
from controller.util import now_iso


@on_start(15, "tags")
async def _bootstrap(core: Controller) -> None:
    core.services["tags"] = Tags(core)


def _tags(ctx: ApiContext) -> Tags:
    return ctx.core.services["tags"]


class CreateTagMsg(ApiMessage):
    resourceType: str = Field(min_length=1, json_schema_extra={"enum": list[Any](sorted(RESOURCE_TYPES))})
    resourceUuid: Uuid
    tag: str = Field(min_length=1)


class UpdateSystemTagMsg(ApiMessage):
    uuid: Uuid
    tag: str = Field(min_length=1)


class DeleteTagMsg(DeleteMessage):
    uuid: Uuid


async def _warnings(ctx: ApiContext, tag: str) -> dict[str, Any]:
    """Per-tag advice for the reply (e.g. why cloud-init would ignore a user data)."""
    advise = ctx.core.services.get("tag-advice")
    if advise is None:
        return {}
    warnings = advise(tag)
    return {"warnings": warnings} if warnings else {}


@api("CreateSystemTag", CreateTagMsg, queue=lambda m: m.resourceUuid)
async def create_system_tag(ctx: ApiContext, msg: CreateTagMsg) -> dict[str, Any]:
    """Attach a system tag to a resource; the tag must match a registered pattern and pass its validator."""
    tags = _tags(ctx)
    await tags.check_resource(msg.resourceType, msg.resourceUuid)
    await tags.validate_system_tag(msg.resourceType, msg.resourceUuid, msg.tag)
    async with ctx.db.write() as tx:
        row = await tags.write(tx, msg.resourceType, msg.resourceUuid, msg.tag, system=True)
    if row is None:
        return {"inventory": None}
    await tags.notify("created", msg.resourceType, msg.resourceUuid, msg.tag)
    return {"inventory": await ctx.inventory("SystemTag", row["uuid"]), **await _warnings(ctx, msg.tag)}


@api("CreateUserTag", CreateTagMsg, queue=lambda m: m.resourceUuid)
async def create_user_tag(ctx: ApiContext, msg: CreateTagMsg) -> dict[str, Any]:
    """Attach a free-form user tag to a resource."""
    tags = _tags(ctx)
    await tags.check_resource(msg.resourceType, msg.resourceUuid)
    async with ctx.db.write() as tx:
        row = await tags.write(tx, msg.resourceType, msg.resourceUuid, msg.tag, system=False)
    if row is None:
        return {"inventory": None}
    return {"inventory": await ctx.inventory("UserTag", row["uuid"])}


@api("UpdateSystemTag", UpdateSystemTagMsg, queue=lambda m: f"tag:{m.uuid}")
async def update_system_tag(ctx: ApiContext, msg: UpdateSystemTagMsg) -> dict[str, Any]:
    """Replace the text of a system tag; the new value is validated against the tag's resource."""
    row = await ctx.db.fetchone("SELECT * FROM SystemTag WHERE uuid=?", (msg.uuid,))
    if row is None:
        raise NotFound(f"invalid field[uuid], resource[uuid:{msg.uuid}, type:SystemTagVO] not found")
    if row["tag"] == msg.tag:
        return {"inventory": await ctx.inventory("SystemTag", msg.uuid)}
    tags = _tags(ctx)
    old = await tags.validate_system_tag(row["resourceType"], row["resourceUuid"], row["tag"])
    new = await tags.validate_system_tag(row["resourceType"], row["resourceUuid"], msg.tag)
    if old.pattern != new.pattern:
        raise OperationError(f"system tag[uuid:{msg.uuid}] is a {old.key()!r} tag; it cannot become a "
                             f"{new.key()!r} tag (create that tag instead)")
    async with ctx.db.write() as tx:
        await tx.update("SystemTag", {"uuid": msg.uuid}, {"tag": msg.tag, "lastOpDate": now_iso()})
    await tags.notify("updated", row["resourceType"], row["resourceUuid"], msg.tag)
    return {"inventory": await ctx.inventory("SystemTag", msg.uuid), **await _warnings(ctx, msg.tag)}


@api("DeleteTag", DeleteTagMsg, queue=lambda m: f"tag:{m.uuid}")
async def delete_tag(ctx: ApiContext, msg: DeleteTagMsg) -> dict[str, Any]:
    """Delete a system or user tag; inherent system tags cannot be deleted."""
    tags = _tags(ctx)
    row = await ctx.db.fetchone("SELECT *, 'System' AS kind FROM SystemTag WHERE uuid=?", (msg.uuid,))
    if row is not None and row["inherent"]:
        raise OperationError(f"tag[uuid:{msg.uuid}] is an inherent system tag, can not be removed")
    async with ctx.db.write() as tx:
        if row is not None:
            await tx.execute("DELETE FROM SystemTag WHERE uuid=?", (msg.uuid,))
        else:
            await tx.execute("DELETE FROM UserTag WHERE uuid=?", (msg.uuid,))
    if row is not None:
        await tags.notify("deleted", row["resourceType"], row["resourceUuid"], row["tag"])
    return {}
