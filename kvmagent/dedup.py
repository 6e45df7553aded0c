"""Request-id deduplication: a bounded LRU of recent replies (STYLE.md: idempotent commands with ids).

A repeated ``X-Request-Id`` gets the first reply without running the command again; a duplicate that
arrives while the first is still running waits for it. Replies of failed commands (AgentError) are
cached like any other reply; an unexpected crash is not, so a retry runs the command again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

Reply = tuple[int, dict[str, Any]]


class ReplyCache:
    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._entries: OrderedDict[str, asyncio.Future[Reply]] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self, key: str, fn: Callable[[], Awaitable[Reply]]) -> Reply:
        fut = self._entries.get(key)
        if fut is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._entries[key] = fut
        self._evict()
        try:
            reply = await fn()
        except BaseException as e:
            self._entries.pop(key, None)
            if isinstance(e, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(e)
                fut.exception()  # mark retrieved: nobody may be waiting
            raise
        fut.set_result(reply)
        return reply

    def _evict(self) -> None:
        """Drop the oldest finished replies beyond ``size``; running commands are never evicted."""
        excess = len(self._entries) - self.size
        if excess <= 0:
            return
        for key in [k for k, f in self._entries.items() if f.done()][:excess]:
            del self._entries[key]
