"""Who tells a host what to enforce, and makes sure it ends up current (1.0's failure-host queue, done better).

Guarantees:

* Every change first raises the affected hosts' ``wantedGeneration`` (table ``SecurityGroupHostState``) in
  the database, then pushes: each push carries the host's WHOLE rule set computed at send time and the
  generation read with it, so a push is never partial and a later push never loses to an earlier one (the
  agent ignores a generation lower than the one it enforces).
* Pushes to one host are serialised (one lock per host); pushes to different hosts run concurrently.
* A failed push (agent unreachable, agent error) never fails the API call (1.0: rules are asynchronous): the
  host stays behind (``appliedGeneration < wantedGeneration``, ``lastError`` kept) and the supervised task
  ``secgroup-retry`` pushes every Connected host that is behind, every ``securityGroup/
  host.failureWorkerInterval`` seconds (up to ``host.failureResolvePerTime`` hosts a round), until current.
* Hosts that are not Connected are not pushed; their (re)connect pushes the full set with ``force`` (the
  controller's view wins over what the agent kept), which also removes the rules of NICs the host no
  longer runs.
* API paths wait for their pushes at most ``PUSH_WAIT`` seconds; slower pushes go on in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from controller.core import Controller
from controller.secgroup.rules import host_rule_set
from controller.util import now_iso
from kvmagent.contract.secgroup import SecurityGroupApplyCmd

log = logging.getLogger(__name__)

PUSH_WAIT = 10.0
TIMEOUT = 60.0


class Pusher:
    def __init__(self, core: Controller) -> None:
        self.core = core
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[bool]] = set()
        self.pushed = 0

    async def bump(self, host_uuids: Iterable[str]) -> None:
        """Record that the hosts must enforce a new generation (one transaction)."""
        hosts = sorted(set(host_uuids))
        if not hosts:
            return
        async with self.core.db.write() as tx:
            await tx.executemany(
                "INSERT INTO SecurityGroupHostState (hostUuid, wantedGeneration, lastOpDate) "
                "SELECT ?, 1, ? WHERE EXISTS (SELECT 1 FROM Host WHERE uuid = ?) ON CONFLICT(hostUuid) DO UPDATE "
                "SET wantedGeneration = wantedGeneration + 1, lastOpDate = excluded.lastOpDate",
                [(h, now_iso(), h) for h in hosts])

    async def changed(self, host_uuids: Iterable[str], *, wait: float = PUSH_WAIT, **kw: Any) -> None:
        """Bump and push ``host_uuids``; wait for the pushes up to ``wait`` seconds (never raises)."""
        hosts = sorted(set(host_uuids))
        if not hosts:
            return
        await self.bump(hosts)
        tasks = [asyncio.create_task(self.push(h, **kw), name=f"secgroup-push:{h}") for h in hosts]
        for t in tasks:
            self._background.add(t)
            t.add_done_callback(self._background.discard)
        await asyncio.wait(tasks, timeout=wait)

    async def push(self, host_uuid: str, *, force: bool = False, include_vm: str | None = None,
                   exclude_vm: str | None = None) -> bool:
        """Send the host its whole current set; True when the host confirmed it. Failures are recorded."""
        lock = self._locks.setdefault(host_uuid, asyncio.Lock())
        async with lock:
            host = await self.core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (host_uuid,))
            if host is None or (host["status"] != "Connected" and not force):
                return False
            state = await self.core.db.fetchone("SELECT wantedGeneration FROM SecurityGroupHostState WHERE "
                                                "hostUuid=?", (host_uuid,))
            gen = state[0] if state else 0
            t0 = time.monotonic()
            try:
                nics = await host_rule_set(self.core, host_uuid, include_vm=include_vm, exclude_vm=exclude_vm)
                reply = await self.core.services["agents"].call(
                    dict(host), SecurityGroupApplyCmd(generation=gen, nics=nics, force=force), timeout=TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                await self._record(host_uuid, None, f"{type(e).__name__}: {e}")
                log.warning("security groups: push of generation %d to host %s failed (retried): %s", gen,
                            host_uuid, e)
                return False
            self.pushed += 1
            await self._record(host_uuid, reply.generation, None)
            log.info("security groups: host %s enforces generation %d (%d NICs, %d rules) in %.3f s", host_uuid,
                     reply.generation, len(nics), reply.ruleCount, time.monotonic() - t0)
            return True

    async def _record(self, host_uuid: str, applied: int | None, error: str | None) -> None:
        async with self.core.db.write() as tx:
            if applied is None:
                await tx.execute("UPDATE SecurityGroupHostState SET failures = failures + 1, lastError = ?, "
                                 "lastOpDate = ? WHERE hostUuid = ?", (error[:2000] if error else None, now_iso(),
                                                                       host_uuid))
            else:
                await tx.execute(
                    "INSERT INTO SecurityGroupHostState (hostUuid, wantedGeneration, appliedGeneration, lastOpDate) "
                    "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM Host WHERE uuid = ?) ON CONFLICT(hostUuid) "
                    "DO UPDATE SET appliedGeneration = MAX(appliedGeneration, excluded.appliedGeneration), "
                    "wantedGeneration = MAX(wantedGeneration, excluded.appliedGeneration), failures = 0, "
                    "lastError = NULL, lastOpDate = excluded.lastOpDate",
                    (host_uuid, applied, applied, now_iso(), host_uuid))

    async def behind(self, limit: int) -> list[str]:
        """Connected hosts whose confirmed generation is behind the wanted one, oldest change first."""
        rows = await self.core.db.fetchall(
            "SELECT s.hostUuid FROM SecurityGroupHostState s JOIN Host h ON h.uuid = s.hostUuid WHERE "
            "s.appliedGeneration < s.wantedGeneration AND h.status = 'Connected' ORDER BY s.lastOpDate LIMIT ?",
            (limit,))
        return [r[0] for r in rows]

    async def retry_round(self) -> None:
        """Push every host that is behind (bounded)."""
        await self.retry_hosts()

    async def retry_hosts(self) -> int:
        """One retry round; returns how many hosts became current."""
        limit = self.core.services["configs"].get_int("securityGroup", "host.failureResolvePerTime")
        hosts = await self.behind(limit)
        results = await asyncio.gather(*(self.push(h) for h in hosts))
        return sum(1 for ok in results if ok)

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
