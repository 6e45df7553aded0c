"""Per-resource ordered work queues (ZStack's "sync chain").

``await queues.run(key, fn)`` runs ``fn()`` after every earlier call with the same key has finished;
calls with different keys run concurrently. There is no global lock: idle keys cost nothing (the
per-key lock is dropped when its last waiter leaves).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class WorkQueues:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def run(self, key: str | None, fn: Callable[[], Awaitable[T]]) -> T:
        if key is None:
            return await fn()
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await fn()
        finally:
            lock2, users2 = self._locks[key]
            if users2 <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock2, users2 - 1)

    def busy(self) -> int:
        return len(self._locks)

    def is_busy(self, key: str) -> bool:
        """True while a call with ``key`` runs or waits (an operation on that resource is under way)."""
        return key in self._locks
