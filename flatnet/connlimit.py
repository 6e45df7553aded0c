"""Connection limits of the metadata server: one guest must never exhaust the agent's file descriptors.

The metadata server runs inside the agent, and every guest on a Flat-Userdata L3 can open TCP connections to
it. Each accepted connection is an fd of the agent, so without limits ~1,000 connections from one guest take
the agent's (and so VM management's) descriptors. :class:`ConnectionLimiter` admits a connection only while

* its source (L3 namespace cookie, source IP) holds fewer than ``per_source`` connections, and
* the whole server holds fewer than ``total`` (a global cap well below the agent's RLIMIT_NOFILE).

A refused connection is closed at once (its fd is freed in the same loop iteration), and logged at most
once a minute per source with the number refused meanwhile. :class:`GuardedProtocol` wraps aiohttp's
request handler: it applies the limiter and a hard lifetime per connection (a slow client that trickles its
headers, or holds a keep-alive connection, is cut after ``lifetime`` seconds; metadata requests are tiny GETs
answered in milliseconds, and HTTP clients reconnect after a closed keep-alive connection).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[int, str]  # (netns cookie of the listening socket, source IP)
PER_SOURCE = 16
TOTAL_MAX = 1024
LIFETIME = 30.0
KEEPALIVE = 5.0
REFUSAL_LOG_INTERVAL = 60.0


def default_total() -> int:
    """The global cap: a quarter of the soft RLIMIT_NOFILE, at most :data:`TOTAL_MAX`, at least 64."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return TOTAL_MAX
    return max(64, min(TOTAL_MAX, soft // 4))


class ConnectionLimiter:
    def __init__(self, *, per_source: int = PER_SOURCE, total: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_source < 1:
            raise ValueError(f"per_source {per_source} must be at least 1")
        self.per_source = per_source
        self.total = default_total() if total is None else total
        self.clock = clock
        self.open = 0
        self.refused = 0
        self._by_source: Counter[Key] = Counter()
        self._refusals: dict[Key, tuple[float, int]] = {}  # source → (last logged, refused since)

    def admit(self, key: Key) -> bool:
        why = None
        if self._by_source[key] >= self.per_source:
            why = f"it already holds {self.per_source} connections (the per-source limit)"
        elif self.open >= self.total:
            why = f"the metadata server holds {self.total} connections (the global cap)"
        if why is not None:
            self.refused += 1
            self._log_refusal(key, why)
            return False
        self._by_source[key] += 1
        self.open += 1
        return True

    def release(self, key: Key) -> None:
        self.open -= 1
        self._by_source[key] -= 1
        if self._by_source[key] <= 0:
            del self._by_source[key]

    def held(self, key: Key) -> int:
        return self._by_source.get(key, 0)

    def _log_refusal(self, key: Key, why: str) -> None:
        now = self.clock()
        last, count = self._refusals.get(key, (float("-inf"), 0))
        count += 1
        if now - last >= REFUSAL_LOG_INTERVAL:
            log.warning("metadata: refused a connection from %s (namespace cookie %d): %s; %d refused from this "
                        "source since the last message", key[1], key[0], why, count)
            self._refusals[key] = (now, 0)
        else:
            self._refusals[key] = (last, count)
        if len(self._refusals) > 4096:  # bounded: forget the oldest sources
            for k in list(self._refusals)[:1024]:
                del self._refusals[k]


class GuardedProtocol(asyncio.Protocol):
    """Admits the connection through ``limiter`` and then hands it to ``make_inner()`` (aiohttp's handler);
    aborts it after ``lifetime`` seconds."""

    def __init__(self, limiter: ConnectionLimiter, make_inner: Callable[[], Any], key_of: Callable[[Any], Key],
                 lifetime: float) -> None:
        self._limiter = limiter
        self._make_inner = make_inner
        self._key_of = key_of
        self._lifetime = lifetime
        self._inner: Any = None
        self._key: Key | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            key = self._key_of(transport)
        except OSError:
            transport.abort()  # type: ignore[attr-defined]
            return
        if not self._limiter.admit(key):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._key = key
        self._timer = asyncio.get_running_loop().call_later(self._lifetime, transport.abort)  # type: ignore[attr-defined]
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._key is not None:
            self._limiter.release(self._key)
            self._key = None
        if self._inner is not None:
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
