"""After a controller upgrade: every Connected host added over SSH whose agent last reported another release or
source digest than this controller deploys is reconnected — which redeploys its agent
(:func:`controller.compute.hosts.connect_current_agent`) — a few hosts at a time, in each host's work queue.
Its VMs keep running: they are libvirt's, the agent restart does not touch them. A host that cannot be upgraded
is left as the reconnect leaves it (logged; one protocol level behind still works, see ``connect.check_protocol``).
"""

from __future__ import annotations

import asyncio
import logging

from controller.compute import deploy
from controller.core import Controller, on_start
from controller.errors import ApiError
from controller.version import VERSION

log = logging.getLogger(__name__)
PARALLEL = 2


async def outdated_hosts(core: Controller) -> list[str]:
    digest = await asyncio.to_thread(deploy.local_digest)
    rows = await core.db.fetchall(
        "SELECT uuid, password, agentVersion, agentDigest FROM Host WHERE status='Connected' "
        "AND state NOT IN ('PreMaintenance', 'Maintenance') ORDER BY uuid")
    return [r["uuid"] for r in rows if r["password"] and (r["agentVersion"] != VERSION or r["agentDigest"] != digest)]


async def upgrade_agents(core: Controller, parallel: int = PARALLEL) -> list[str]:
    """Reconnect the outdated hosts, ``parallel`` at a time; returns the uuids of those that failed."""
    from controller.compute.hosts import reconnect

    stale = await outdated_hosts(core)
    if not stale:
        return []
    log.info("%d host(s) run another agent than release %s: reconnecting them to upgrade it", len(stale), VERSION)
    gate = asyncio.Semaphore(parallel)
    failed: list[str] = []

    async def one(uuid: str) -> None:
        async with gate:
            try:
                await core.queues.run(uuid, lambda: reconnect(core, uuid))
            except ApiError as e:
                failed.append(uuid)
                log.warning("agent upgrade of host %s failed: %s", uuid, e.details)

    await asyncio.gather(*(one(u) for u in stale))
    return failed


@on_start(65, "agent upgrade")
async def _start(core: Controller) -> None:
    async def job() -> None:
        await upgrade_agents(core)

    core.tasks.start("agent-upgrade", job, restart=False)
