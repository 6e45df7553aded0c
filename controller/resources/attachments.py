"""Attachment listeners: what an attach or detach of primary storage / L2 network (to a cluster) and backup
storage (to a zone) means for the hosts already there (issue 18, reliability 2: any build order).

The resource APIs only write records; the compute side registers here to bring every Connected host of the
cluster (zone) to the state a host joining later gets from its connect sequence, so the order of building a
cloud does not matter. Events and their keywords (``ctx`` first):

    primaryStorage.attached / .detached   ps=<PrimaryStorage row>, cluster_uuid=...
    l2.attached / .detached               l2=<L2Network row>, cluster_uuid=...
    backupStorage.attached / .detached    bs_uuid=..., zone_uuid=...

``*.attached`` listeners run after the attach is committed; one that raises fails the API, which then undoes
the attach (:func:`run_attached` returns the error). ``*.detached`` listeners run after the detach is committed;
a failure is logged (the record is gone either way; the host keeps what it had, harmlessly).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from controller.api.context import ApiContext

log = logging.getLogger(__name__)

Listener = Callable[..., Awaitable[None]]
EVENTS = ("primaryStorage.attached", "primaryStorage.detached", "l2.attached", "l2.detached",
          "backupStorage.attached", "backupStorage.detached")
_LISTENERS: dict[str, list[Listener]] = {}


def listen(event: str, fn: Listener) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown attachment event {event!r}; known: {EVENTS}")
    if fn not in _LISTENERS.setdefault(event, []):
        _LISTENERS[event].append(fn)


async def run_attached(ctx: ApiContext, event: str, **kw: Any) -> None:
    """Run the listeners of an attach; the first exception propagates (the caller undoes the attach)."""
    for fn in _LISTENERS.get(event, []):
        await fn(ctx, **kw)


async def run_detached(ctx: ApiContext, event: str, **kw: Any) -> None:
    for fn in _LISTENERS.get(event, []):
        try:
            await fn(ctx, **kw)
        except Exception:
            log.exception("%s listener %s failed (%s)", event, getattr(fn, "__qualname__", fn), kw)
