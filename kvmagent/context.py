"""What every handler gets: :class:`AgentContext`."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from kvmagent.config import AgentConfig
from kvmagent.driver.base import HypervisorDriver
from kvmagent.events import EventReporter, Judger, StateTracker
from kvmagent.metrics import Metrics
from kvmagent.tickets import Tickets
from kvmagent.vmops import VmOps


@dataclass
class AgentContext:
    """The agent's state, shared by handlers.

    * ``config``: the :class:`AgentConfig`; ``driver``: the hypervisor driver; ``events``: the reporter.
    * ``vms``: VM operations that tell the judger which events are the agent's own.
    * ``flatnet`` / ``storage``: ``flatnet.service.FlatNetService`` and ``storage.service.StorageService``
      (None when not wired, e.g. on simulated hosts without data planes).
    * ``boot_id``: new on every agent start (``/host/ping``), ``ready``: start-up reconcile done and
      libvirt connected.
    """

    config: AgentConfig
    driver: HypervisorDriver
    events: EventReporter
    judger: Judger
    tracker: StateTracker
    vms: VmOps
    metrics: Metrics
    flatnet: Any = None
    storage: Any = None
    #: one-time transfer tickets this host issued for volume copies it receives (``kvmagent.tickets``)
    tickets: Tickets = field(default_factory=Tickets)
    boot_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    not_ready_reason: str = "starting"
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ready(self) -> bool:
        return self.ready_event.is_set()

    def mark_ready(self) -> None:
        self.not_ready_reason = ""
        self.ready_event.set()

    def mark_not_ready(self, reason: str) -> None:
        self.not_ready_reason = reason
        self.ready_event.clear()
