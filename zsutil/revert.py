"""Undo on failure (Incus's ``revert`` lesson) for multi-step setup.

    async with Reverter() as r:
        await create_namespace(...)
        r.add(delete_namespace, name)
        await start_dnsmasq(...)
        r.add(stop_dnsmasq, name)
        r.success()

If the block exits without ``success()`` (an exception, a cancellation, or a forgotten commit), the
registered undo steps run in reverse order; an undo step that fails is logged and the others still run.
One helper for agent, flatnet and storage.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Reverter:
    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._ok = False

    def add(self, fn: Callable[..., Any], *args: Any) -> None:
        """Register the undo of the step that just succeeded (sync or async callable)."""
        self._steps.append((fn, args))

    def success(self) -> None:
        self._ok = True

    async def revert(self) -> None:
        while self._steps:
            fn, args = self._steps.pop()
            try:
                res = fn(*args)
                if inspect.isawaitable(res):
                    await res
            except Exception:
                log.exception("undo step %s%r failed", getattr(fn, "__name__", fn), args)

    async def __aenter__(self) -> Reverter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._ok:
            await self.revert()
