"""Registers every ``Query*`` API of the query engine (``controller.query``) with the API registry."""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.registry import api
from controller.query import QueryMsg, query, query_api_names


class ApiQueryMsg(QueryMsg):
    session: dict[str, Any] | str | None = None


def _register(api_name: str, resource: str) -> None:
    model = type(api_name, (ApiQueryMsg,), {"__module__": __name__, "__doc__": f"{api_name} conditions"})

    async def handler(ctx: ApiContext, msg: Any) -> dict[str, Any]:
        async with ctx.db.read() as conn:
            reply = await query(conn, resource, msg)
        reply.pop("success", None)
        return reply

    handler.__doc__ = f"Query {resource} inventories with ZStack conditions."
    api(api_name, model)(handler)


for _name, _resource in sorted(query_api_names().items()):
    _register(_name, _resource)
