"""The controller core: what every service shares (database, queues, jobs, configs, tasks, metrics).

Start-up order (``Controller.start``): open the database and migrate, fail leftover jobs, create the
first-start rows (admin account, global configs, network service providers), then start the
supervised background tasks that the service modules registered with :func:`on_start`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from controller.config import ControllerConfig
from controller.db import Database
from controller.jobs import Jobs
from controller.metrics import Metrics
from controller.queues import WorkQueues
from zsutil.tasks import Supervisor

log = logging.getLogger(__name__)

StartHook = Callable[["Controller"], Awaitable[None]]
_START_HOOKS: list[tuple[int, str, StartHook]] = []


def on_start(order: int, name: str) -> Callable[[StartHook], StartHook]:
    """Register a start-up hook of a service module (lower ``order`` runs first)."""

    def deco(fn: StartHook) -> StartHook:
        _START_HOOKS.append((order, name, fn))
        return fn

    return deco


class Controller:
    def __init__(self, config: ControllerConfig, *, db: Database | None = None) -> None:
        self.config = config
        self.db = db or Database(config.db_path)
        self.queues = WorkQueues()
        self.jobs = Jobs(self.db)
        self.metrics = Metrics()
        self.tasks = Supervisor()
        #: service singletons by name (e.g. "configs", "agents"), set by the service modules' hooks
        self.services: dict[str, Any] = {}
        self.ready = False

    async def start(self) -> None:
        await self.db.open()
        failed = await self.jobs.recover()
        if failed:
            log.warning("%d job(s) were running when the controller stopped; marked Failed", failed)
        for _order, name, hook in sorted(_START_HOOKS, key=lambda h: h[0]):
            log.debug("start hook %s", name)
            await hook(self)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.tasks.stop()
        await self.jobs.cancel_all()
        for svc in self.services.values():
            close = getattr(svc, "close", None)
            if close is not None:
                await close()
        await self.db.close()
