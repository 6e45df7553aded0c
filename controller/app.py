"""The controller's aiohttp application, built by :func:`create_app`.

Importing :mod:`controller.services` registers every API and start-up hook; the app's cleanup context
starts the :class:`~controller.core.Controller` and stops it on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from controller import services  # noqa: F401  (registers APIs and start hooks)
from controller.api.http import CORE, add_routes, error_middleware
from controller.config import ControllerConfig
from controller.core import Controller
from controller.ui import setup_ui


def create_app(config: ControllerConfig, *, core: Controller | None = None) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=64 * 1024 * 1024)
    app[CORE] = core or Controller(config)
    add_routes(app)
    setup_ui(app)  # the web console under /ui/ (/ redirects there)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await app[CORE].start()
        yield
        await app[CORE].stop()

    app.cleanup_ctx.append(lifecycle)
    return app
