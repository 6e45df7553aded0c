"""VM state reports to the controller (reference §3.9, DESIGN.md "Controller ↔ agent contract").

* :class:`Judger`: per-VM expectations of the events the agent's own operations cause (1.0's "judger"):
  set before the operation, kept while it runs and for ``ttl`` seconds after it, then forgotten.
* :class:`EventReporter`: ``POST {controller_url}/v1/agent/events`` with the host token (over HTTPS, the
  controller's certificate must come from the CA in ``tls_ca`` and name ``CONTROLLER_NAME``). Reports are sent
  at once; while the controller is away they are queued (bounded, newest state per VM wins) and retried
  with exponential backoff.
* :class:`StateTracker`: glue from driver :class:`DomainEvent` to reports: maps, swallows expected events,
  drops repeats of the last known state, and passes REBOOT events to a hook (the CD-then-disk rule). Every
  event that changes a domain's run state is reported at once (suspend, resume, PM suspend/wakeup, crash,
  start of a defined domain, stop); a resume is never taken for the Running an own start expects.

Report bodies::

    {"hostUuid": ..., "vmUuid": ..., "vmState": "Running|Stopped|Paused|Crashed", "reason": ..., "ts": ...}
    {"hostUuid": ..., "kind": "reconnectMe", "reason": ...}
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kvmagent.contract.tls import CONTROLLER_NAME
from kvmagent.driver.base import DomainEvent, VmState
from kvmagent.metrics import Metrics

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/agent/events"
#: Event reasons (``kvmagent.driver.events_map``) that take a domain out of Paused / PM-suspended.
LEAVES_PAUSE = frozenset({"resumed", "wakeup"})


@dataclass
class _Expectation:
    states: set[VmState]
    running: int = 0
    until: float = 0.0


@dataclass
class Judger:
    """Which events the agent's own operations will cause. ``clock`` is injectable (monotonic seconds)."""

    ttl: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _exp: dict[str, _Expectation] = field(default_factory=dict)

    def expect(self, vm_uuid: str, states: set[VmState]) -> None:
        e = self._exp.get(vm_uuid)
        if e is None or not self._alive(e):
            e = self._exp[vm_uuid] = _Expectation(set())
        e.states |= states
        e.running += 1

    def settle(self, vm_uuid: str) -> None:
        """The operation finished; its late events are still swallowed for ``ttl`` seconds."""
        e = self._exp.get(vm_uuid)
        if e is not None:
            e.running = max(0, e.running - 1)
            e.until = self.clock() + self.ttl

    def expect_for(self, vm_uuid: str, states: set[VmState], seconds: float) -> None:
        """Expect ``states`` for the next ``seconds`` without an operation running here (a domain that another
        host's agent is migrating to this one)."""
        self.expect(vm_uuid, states)
        e = self._exp[vm_uuid]
        e.running = max(0, e.running - 1)
        e.until = max(e.until, self.clock() + seconds)

    def swallows(self, vm_uuid: str, state: VmState) -> bool:
        e = self._exp.get(vm_uuid)
        if e is None:
            return False
        if not self._alive(e):
            del self._exp[vm_uuid]
            return False
        return state in e.states

    def _alive(self, e: _Expectation) -> bool:
        return e.running > 0 or self.clock() < e.until


class EventReporter:
    """Queue and deliver reports. ``start()``/``stop()`` run the sender task."""

    def __init__(self, host_uuid: str, controller_url: str | None, token: str, *, metrics: Metrics,
                 max_pending: int = 10000, backoff: tuple[float, float] = (0.2, 10.0),
                 post_timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> None:
        self.host_uuid = host_uuid
        #: the controller's CA (kvmagent.contract.tls): an https controller must present a certificate from it that
        #: names ``CONTROLLER_NAME``
        self.tls = tls
        self.controller_url = controller_url
        self.token = token
        self.metrics = metrics
        self.max_pending = max_pending
        self.backoff = backoff
        self.post_timeout = post_timeout
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def report_state(self, vm_uuid: str, state: VmState, reason: str) -> None:
        self._enqueue(f"vm:{vm_uuid}", {"hostUuid": self.host_uuid, "vmUuid": vm_uuid,
                                        "vmState": str(state), "reason": reason, "ts": time.time()})

    def report_reconnect(self, reason: str) -> None:
        self._enqueue("reconnectMe", {"hostUuid": self.host_uuid, "kind": "reconnectMe", "reason": reason})

    def _enqueue(self, key: str, body: dict[str, Any]) -> None:
        self._pending.pop(key, None)  # newest per VM wins, and goes to the back of the queue
        self._pending[key] = body
        while len(self._pending) > self.max_pending:
            old, _ = self._pending.popitem(last=False)
            self.metrics.count_event("report", "dropped")
            log.warning("event queue full (%d): dropped the oldest report %s", self.max_pending, old)
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.post_timeout))
            self._task = asyncio.create_task(self._sender(), name=f"event-reporter-{self.host_uuid}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _sender(self) -> None:
        delay = self.backoff[0]
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                key, body = next(iter(self._pending.items()))
                if await self._post(body):
                    if self._pending.get(key) is body:
                        del self._pending[key]
                    delay = self.backoff[0]
                    continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])

    async def _post(self, body: dict[str, Any]) -> bool:
        """True when the report is done with (delivered, or refused as malformed); False to retry."""
        if not self.controller_url or self._session is None:
            return False
        kind = str(body.get("kind", "vmState"))
        pinned: dict[str, Any] = {}
        if self.tls is not None and self.controller_url.startswith("https://"):
            pinned = {"ssl": self.tls, "server_hostname": CONTROLLER_NAME}
        try:
            async with self._session.post(self.controller_url + EVENTS_PATH, json=body,
                                          headers={"Authorization": f"Bearer {self.token}"}, **pinned) as resp:
                if resp.status < 300:
                    self.metrics.count_event(kind, "sent")
                    return True
                if resp.status in (400, 403, 404, 409, 422):
                    self.metrics.count_event(kind, "refused")
                    log.warning("controller refused report %s: HTTP %d %s", body, resp.status,
                                (await resp.text())[:200])
                    return True
                log.info("controller answered HTTP %d to an event report; will retry", resp.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.info("cannot reach controller %s (%s); will retry", self.controller_url, e)
        return False


RebootHook = Callable[[str], Awaitable[None]]


class StateTracker:
    """Turns driver events into reports: swallow what the judger expects, skip repeats, report the rest."""

    def __init__(self, judger: Judger, reporter: EventReporter, metrics: Metrics,
                 on_reboot: RebootHook | None = None) -> None:
        self.judger = judger
        self.reporter = reporter
        self.metrics = metrics
        self.on_reboot = on_reboot
        self.known: dict[str, VmState] = {}

    def reset(self, states: dict[str, VmState]) -> None:
        """Start-up reconcile: what libvirt says now is the baseline."""
        self.known = dict(states)

    async def on_event(self, ev: DomainEvent) -> None:
        if ev.rebooted:
            if self.on_reboot is not None:
                await self.on_reboot(ev.vm_uuid)
            return
        if ev.state is None:
            return
        previous = self.known.get(ev.vm_uuid)
        self.known[ev.vm_uuid] = ev.state
        if self.judger.swallows(ev.vm_uuid, ev.state) and not self._leaves_pause(ev, previous):
            self.metrics.count_event("vmState", "swallowed")
            return
        if previous == ev.state:
            return
        self.metrics.count_event("vmState", "reported")
        self.reporter.report_state(ev.vm_uuid, ev.state, ev.reason)

    def _leaves_pause(self, ev: DomainEvent, previous: VmState | None) -> bool:
        """A resume or PM wakeup out of a pause this tracker saw is the agent's own only when its operation
        also expected the pause: an operation that expects Running (start, reboot) never resumes a domain
        that something else paused, so ``virsh resume`` right after a start is still reported. (QEMU's own
        start emits a RESUMED without a SUSPENDED before it: that one stays swallowed.)"""
        return (ev.reason in LEAVES_PAUSE and previous == VmState.PAUSED
                and not self.judger.swallows(ev.vm_uuid, VmState.PAUSED))
