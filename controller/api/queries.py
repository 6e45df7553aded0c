"""Registers every ``Query*`` API of the query engine (``controller.query``) with the API registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from controller.api.context import ApiContext
from controller.api.registry import api
from controller.query import QueryMsg, query, query_api_names


class ApiQueryMsg(QueryMsg):
    session: dict[str, Any] | str | None = None


#: resource name -> coroutine completing its queried inventories in place (fields no table column holds,
#: e.g. a snapshot tree's nested leaves); registered by the owning service module with :func:`enrich`
_ENRICH: dict[str, Callable[[ApiContext, list[dict[str, Any]]], Awaitable[None]]] = {}


def enrich(resource: str, fn: Callable[[ApiContext, list[dict[str, Any]]], Awaitable[None]]) -> None:
    _ENRICH[resource] = fn


def _register(api_name: str, resource: str) -> None:
    model = type(api_name, (ApiQueryMsg,), {"__module__": __name__, "__doc__": f"{api_name} conditions"})

    async def handler(ctx: ApiContext, msg: Any) -> dict[str, Any]:
        async with ctx.db.read() as conn:
            reply = await query(conn, resource, msg)
        if resource in _ENRICH and reply.get("inventories"):
            await _ENRICH[resource](ctx, reply["inventories"])
        reply.pop("success", None)
        return reply

    handler.__doc__ = f"Query {resource} inventories with ZStack conditions."
    api(api_name, model)(handler)


for _name, _resource in sorted(query_api_names().items()):
    _register(_name, _resource)
