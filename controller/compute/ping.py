"""The host ping task (reference §3.11), supervised, every ``host/ping.interval`` seconds.

* ``/host/ping`` to every Connected or Disconnected host, bounded by ``host/ping.timeout``, no retry.
* ``host/ping.maxFailure`` failures in a row → Disconnected, its VMs → Unknown.
* A Disconnected host that answers again is reconnected when ``host/connection.autoReconnectOnError``.
* A changed ``bootId`` (the agent restarted) → reconnect.
* The first failed ping of a host added over SSH asks the host's init (``systemctl is-active
  zstack-py-kvmagent``, in the background): logged; a unit systemd gave up on (failed) or that was stopped
  (inactive) is brought back by a reconnect (deploy starts it) when ``host/connection.autoReconnectOnError``.
* When ``kvm/vmSyncOnHostPing``, a successful ping of a Connected host is followed by ``/vm/vmsync`` and the
  crash-recovery reconcile of its VMs left in a transitional state (:mod:`.recovery`).
Reconnects run in the host's work queue, so they never overlap a ReconnectHost API call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controller.compute import connect as conn
from controller.compute import recovery, tracer
from controller.core import Controller, on_start
from controller.errors import ApiError
from kvmagent.contract import host as hc
from kvmagent.contract import vm as vc
from zsutil.tasks import every

log = logging.getLogger(__name__)


class HostTracker:
    def __init__(self, core: Controller) -> None:
        self.core = core
        self.failures: dict[str, int] = {}

    def interval(self) -> float:
        return float(self.core.services["configs"].get_int("host", "ping.interval"))

    async def ping_all(self) -> None:
        rows = await self.core.db.fetchall("SELECT * FROM Host WHERE status IN ('Connected', 'Disconnected')")
        await asyncio.gather(*(self.ping(dict(r)) for r in rows))

    async def ping(self, host: dict[str, Any]) -> None:
        configs = self.core.services["configs"]
        agents = self.core.services["agents"]
        try:
            reply = await asyncio.wait_for(agents.call(host, hc.PingCmd(), timeout=configs.get_int(
                "host", "ping.timeout")), configs.get_int("host", "ping.timeout") + 1)
        except (ApiError, TimeoutError) as e:
            await self._failed(host, e)
            return
        self.failures.pop(host["uuid"], None)
        restarted = host["agentBootId"] is not None and reply.bootId != host["agentBootId"]
        if host["status"] == "Disconnected" or restarted:
            if configs.get_bool("host", "connection.autoReconnectOnError") or restarted:
                log.info("host %s answers again (agent restarted: %s); reconnecting", host["uuid"], restarted)
                self.schedule_reconnect(host["uuid"])
            return
        if configs.get_bool("kvm", "vmSyncOnHostPing"):
            states = await agents.call(host, vc.VmSyncCmd())
            await tracer.full_sync(self.core, host["uuid"], dict(states.states))
            # a VM left in a transitional state with no operation under way (a create whose rollback the host
            # could not confirm, ...) is finished or rolled back now that the host answers
            await recovery.reconcile_host(self.core, host, dict(states.states))

    async def _failed(self, host: dict[str, Any], e: Exception) -> None:
        n = self.failures.get(host["uuid"], 0) + 1
        self.failures[host["uuid"]] = n
        if n == 1 and host.get("password"):
            self.core.tasks.start(f"host-agent-probe:{host['uuid']}", lambda: self._probe_init(host, e),
                                  restart=False)
        limit = self.core.services["configs"].get_int("host", "ping.maxFailure")
        if host["status"] == "Connected" and n >= limit:
            log.warning("host %s failed %d pings in a row (%s); Disconnected", host["uuid"], n, e)
            await conn.set_status(self.core, host["uuid"], "Disconnected")
            await tracer.host_disconnected(self.core, host["uuid"])

    async def _probe_init(self, host: dict[str, Any], e: Exception) -> None:
        from controller.compute.deploy import agent_unit_state

        state = await agent_unit_state(self.core, host)
        log.warning("host %s: the agent does not answer (%s); %s", host["uuid"], e, state)
        stopped = state.endswith(": failed") or state.endswith(": inactive")
        if stopped and self.core.services["configs"].get_bool("host", "connection.autoReconnectOnError"):
            log.info("host %s: the agent's unit is not running; reconnecting to start it", host["uuid"])
            self.schedule_reconnect(host["uuid"])

    def schedule_reconnect(self, uuid: str) -> None:
        """Reconnect in the host's queue; failures leave it Disconnected (logged)."""
        from controller.compute.hosts import reconnect

        async def job() -> None:
            try:
                await self.core.queues.run(uuid, lambda: reconnect(self.core, uuid))
            except ApiError as e:
                log.warning("auto-reconnect of host %s failed: %s", uuid, e.details)

        self.core.tasks.start(f"host-reconnect:{uuid}", job, restart=False)


@on_start(60, "host ping")
async def _start(core: Controller) -> None:
    tracker = HostTracker(core)
    core.services["hostTracker"] = tracker

    def start() -> None:
        core.tasks.start("host-ping", lambda: every(tracker.interval, tracker.ping_all))

    async def interval_changed(_category: str, _name: str, _value: str) -> None:
        start()  # a new interval applies now, not after the current (possibly long) sleep

    core.services["configs"].listen(("host", "ping.interval"), interval_changed)
    start()
