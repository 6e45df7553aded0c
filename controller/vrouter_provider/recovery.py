"""The routers after a controller restart: the VirtualRouter provider's part of crash recovery.

A controller that stopped (or was killed) may have committed a change that no router got: an EIP, a
port-forwarding rule, a VM's DHCP entry (the push that follows the commit died with it), or a router left half
connected (its VM started, its agent not yet given its identity and state: status Connecting). Such a router runs
an older state at the very generation the database holds, so the periodic health check alone would find it
``ok`` (:func:`.health.verdict`) and never bring it in line.

At start every Connected router becomes ``Connecting`` (this controller has not talked to it yet) and, once crash
recovery has settled the VMs and synced every Connected host (:mod:`controller.compute.recovery`), one health
check round runs at once rather than after ``virtualRouter/ping.interval``: a router whose agent answers is
pushed the whole state with a new generation, one that does not answer is reconnected, one whose VM is stopped
or gone is created again (the health check's own rules).
"""

from __future__ import annotations

import asyncio
import logging

from controller.core import Controller, on_start
from controller.vrouter_provider import health

log = logging.getLogger(__name__)

#: seconds the round waits for compute's crash recovery (every Connected host's VM sync) before it runs anyway
RECOVERY_WAIT = 120.0


async def after_restart(core: Controller) -> dict[str, str]:
    """Wait for crash recovery, then check (push, reconnect or re-create) every router once; {l3: action}."""
    finished = core.services.get("recovery", {}).get("finished")
    if finished is not None:
        try:
            await asyncio.wait_for(finished.wait(), RECOVERY_WAIT)
        except TimeoutError:
            log.warning("crash recovery did not finish within %.0f s; checking the routers now", RECOVERY_WAIT)
    done = await health.check_all(core)
    if done:
        log.info("routers after the controller's start: %s", done)
    return done


@on_start(75, "vrouter recovery")
async def _start(core: Controller) -> None:
    async with core.db.write() as tx:
        await tx.execute("UPDATE ApplianceVm SET status='Connecting' WHERE status='Connected'")

    async def run() -> None:
        await after_restart(core)

    core.tasks.start("vrouter-recovery", run, restart=False)
