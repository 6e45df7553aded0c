"""The controller's aiohttp application, built by :func:`create_app`.

Importing :mod:`controller.services` registers every API and start-up hook; the app's cleanup context
starts the :class:`~controller.core.Controller` and stops it on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from controller import services  # noqa: F401  (registers APIs and start hooks)
from controller.api.http import CORE, MAX_BODY, add_routes, error_middleware
from controller.config import ControllerConfig
from controller.core import Controller


def server_settings(config: ControllerConfig) -> dict[str, Any]:
    """aiohttp server settings (``web.run_app``/``AppRunner`` keyword arguments). aiohttp's keep-alive timer
    runs from the moment a connection opens until a whole request has arrived, so it is the header read
    timeout too: a client that trickles its headers is cut off after ``header_timeout`` seconds."""
    return {"keepalive_timeout": config.header_timeout}


def create_app(config: ControllerConfig, *, core: Controller | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[CORE] = core or Controller(config)
    add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await app[CORE].start()
        yield
        await app[CORE].stop()

    app.cleanup_ctx.append(lifecycle)
    return app
