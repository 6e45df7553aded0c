"""Handler registration for the agent's endpoints.

A handler module does::

    from kvmagent.routing import handles

    @handles(StartVmCmd)
    async def start_vm(ctx: AgentContext, cmd: StartVmCmd) -> StartVmReply: ...

and is listed in ``kvmagent.handlers.MODULES``; the server (``kvmagent.server``) imports those modules
and mounts every registered endpoint at ``cmd.PATH``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kvmagent.contract.base import AgentReply, AgentRequest
from zsutil.errors import CodedError

Handler = Callable[[Any, Any], Awaitable[AgentReply]]


@dataclass(frozen=True)
class Endpoint:
    request: type[AgentRequest]
    handler: Handler

    @property
    def path(self) -> str:
        return self.request.PATH


ENDPOINTS: dict[str, Endpoint] = {}


def handles(request: type[AgentRequest]) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of ``request.PATH``; a path may be registered once."""
    if not request.PATH.startswith("/"):
        raise ValueError(f"{request.__name__}.PATH must start with '/', got {request.PATH!r}")

    def deco(fn: Handler) -> Handler:
        if request.PATH in ENDPOINTS:
            raise ValueError(f"agent path {request.PATH} registered twice")
        ENDPOINTS[request.PATH] = Endpoint(request, fn)
        return fn

    return deco


def error_response(e: CodedError) -> web.Response:
    """The one mapping of an error to HTTP: every coded error (the agent's, ``storage``'s, ``flatnet``'s)
    is answered with its ``status`` and ``{"error": {code, message, details}}``."""
    return web.json_response(e.body(), status=e.status)
