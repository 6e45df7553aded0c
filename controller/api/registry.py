"""The API registry: every ``POST /v1/{ApiName}`` is one :class:`ApiSpec`.

A service module registers its APIs with::

    @api("CreateZone", CreateZoneMsg)
    async def create_zone(ctx: ApiContext, msg: CreateZoneMsg) -> dict: ...

``session=False`` marks the few APIs that need no session (login, logout, session validation, version);
``job=True`` marks long work that runs as a job (``?async=true`` answers 202); ``queue`` names the
per-resource ordered work queue the call runs in (ZStack's "sync chain"): calls with the same key run
one after another, unrelated ones concurrently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.api.messages import ApiMessage

if TYPE_CHECKING:
    from controller.api.context import ApiContext

Handler = Callable[["ApiContext", Any], Awaitable[dict[str, Any]]]
QueueKey = Callable[[Any], str | None]


@dataclass(frozen=True)
class ApiSpec:
    name: str
    model: type[ApiMessage]
    handler: Handler
    session: bool = True
    job: bool = False
    queue: QueueKey | None = None
    summary: str = ""
    aliases: tuple[str, ...] = field(default=())


API: dict[str, ApiSpec] = {}
ALIASES: dict[str, str] = {}


def api(name: str, model: type[ApiMessage], *, session: bool = True, job: bool = False,
        queue: QueueKey | None = None, aliases: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        if name in API:
            raise ValueError(f"API {name} registered twice")
        API[name] = ApiSpec(name, model, fn, session=session, job=job, queue=queue,
                            summary=(fn.__doc__ or "").strip().split("\n")[0], aliases=aliases)
        for a in aliases:
            ALIASES[a] = name
        return fn

    return deco


def lookup(name: str) -> ApiSpec | None:
    return API.get(ALIASES.get(name, name))


def by_uuid(msg: Any) -> str | None:
    """Queue key for messages that act on ``msg.uuid``."""
    return getattr(msg, "uuid", None)
