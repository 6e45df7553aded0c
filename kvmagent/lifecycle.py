"""Start-up and shutdown of the agent application (aiohttp ``cleanup_ctx``).

Start-up: the event reporter starts; a supervised task opens the hypervisor, rebuilds the in-memory
state from the domains libvirt has (reconcile), starts the data-plane services once, and marks the
agent ready. If the libvirt connection breaks, the agent turns not-ready, sends a "reconnect me" report,
and reopens with backoff, reconciling again. Shutdown undoes all of it in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from kvmagent.appkeys import CTX, TASKS
from kvmagent.context import AgentContext

log = logging.getLogger(__name__)

_SERVICES = ("flatnet", "storage", "secgroup")


async def reconcile(ctx: AgentContext) -> None:
    """Adopt what libvirt runs now as the known state (reports are about changes from here on)."""
    states = await ctx.driver.list_vms()
    ctx.tracker.reset(states)
    log.info("reconciled %d domain(s) on host %s", len(states), ctx.config.host_uuid)


async def _start_services(ctx: AgentContext, started: list[str]) -> None:
    for name in _SERVICES:
        svc = getattr(ctx, name)
        if svc is not None and name not in started:
            await svc.start()
            started.append(name)


async def hypervisor_loop(ctx: AgentContext, started: list[str]) -> None:
    delay = 0.5
    while True:
        lost: asyncio.Queue[str] = asyncio.Queue()
        ctx.driver.subscribe(ctx.tracker.on_event, lost.put_nowait)
        try:
            await ctx.driver.open()
            await reconcile(ctx)
            await _start_services(ctx, started)
            ctx.mark_ready()
            delay = 0.5
            reason = await lost.get()
            ctx.mark_not_ready(reason)
            ctx.events.report_reconnect(reason)
            await ctx.driver.close()
        except Exception as e:
            ctx.mark_not_ready(f"start-up failed: {e}")
            log.warning("agent not ready (%s); retrying in %.1f s", e, delay, exc_info=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    started: list[str] = []
    await ctx.events.start()
    app[TASKS].spawn(f"hypervisor-{ctx.config.host_uuid}", hypervisor_loop(ctx, started))
    yield
    await app[TASKS].cancel_all()
    ctx.mark_not_ready("shutting down")
    for name in reversed(started):
        try:
            await getattr(ctx, name).stop()
        except Exception:
            log.exception("stopping the %s service failed", name)
    await ctx.driver.close()
    await ctx.events.stop()
