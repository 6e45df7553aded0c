"""Supervised background tasks (STYLE 11).

* :class:`Supervisor` (the controller's periodic work): started by name, failures logged, restarted with
  backoff, cancelled on shutdown.
* :class:`TaskGroup` (the agent's one-shot background work): named, failures logged, cancelled on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, fn: Callable[[], Awaitable[None]], *, restart: bool = True) -> None:
        """Run ``fn`` as task ``name``; a task of the same name is cancelled first (used to restart a
        periodic task when its interval changes)."""
        self.cancel(name)
        self._tasks[name] = asyncio.create_task(self._guard(name, fn, restart), name=name)

    async def _guard(self, name: str, fn: Callable[[], Awaitable[None]], restart: bool) -> None:
        delay = 1.0
        while True:
            try:
                await fn()
                log.warning("background task %s exited", name)
                if not restart:
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed; restarting in %.0f s", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def cancel(self, name: str) -> None:
        t = self._tasks.pop(name, None)
        if t is not None:
            t.cancel()

    def names(self) -> list[str]:
        return sorted(self._tasks)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def every(seconds: Callable[[], float], fn: Callable[[], Awaitable[None]]) -> None:
    """Call ``fn`` forever, sleeping ``seconds()`` (re-read each round) between calls."""
    while True:
        await asyncio.sleep(seconds())
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("periodic task %s failed", getattr(fn, "__name__", fn))


class TaskGroup:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s failed", task.get_name(), exc_info=exc)
        else:
            log.warning("background task %s exited", task.get_name())

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
