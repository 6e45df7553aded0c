"""Live state for the console: one change feed (VM states and jobs) shared by every open
``GET /ui/events`` server-sent-events stream.

The feed is one task that runs while at least one stream is open: every ``POLL`` seconds it reads the VMs
whose ``lastOpDate`` moved (every state change through ``capacity.move_vm`` stamps it) and the jobs created or
finished since its last look — indexed range reads, not table scans — and the hosts, primary storage, VIPs,
EIPs and port forwarding rules whose ``lastOpDate`` moved (small tables: :data:`RES_CHANGES`), and hands each
change to every subscriber's queue. A slow subscriber whose queue is full loses its oldest events, never blocks
the feed. It also publishes the progress of running migrations (``Jobs.items``, in memory: per VM, byte counts from the
source agent) when it changed, and once more with ``done`` when a migration ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import web

from controller.api.http import CORE
from controller.core import Controller
from controller.ui import i18n
from controller.ui.web import page
from controller.util import iso_in

log = logging.getLogger(__name__)

POLL = 0.25
#: What one look reads; both searches go through indexes (migration 0008; tests/unit/test_query_plan.py).
VM_CHANGES = "SELECT uuid, state, lastOpDate FROM VmInstance WHERE lastOpDate >= ?"
#: Other resources whose state (and status) pages show live, by table: hosts, primary storage, VIPs, EIPs, port
#: forwarding rules. Small tables next to VmInstance (no index on their lastOpDate: scans); every state or status
#: change stamps lastOpDate. Read at every look, like the VMs (a look that skipped them could let ``since`` pass
#: a change unread).
RES_CHANGES: dict[str, str] = {
    t: f"SELECT uuid, state, {status} AS status, lastOpDate FROM {t} WHERE lastOpDate >= ?"
    for t, status in (("Host", "status"), ("PrimaryStorage", "status"), ("Vip", "NULL"), ("Eip", "NULL"),
                      ("PortForwardingRule", "NULL"))}
JOB_CHANGES = ("SELECT uuid, apiName, state, resourceUuid, createDate FROM Job WHERE createDate >= ? "
               "UNION SELECT uuid, apiName, state, resourceUuid, createDate FROM Job WHERE state != "
               "'Processing' AND finishedDate >= ?")
QUEUE_MAX = 500


class Feed:
    def __init__(self, core: Controller) -> None:
        self.core = core
        self.subscribers: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()
        self._task: asyncio.Task[None] | None = None
        self._vm_seen: dict[str, str] = {}
        self._job_seen: dict[str, str] = {}
        self._res_seen: dict[str, tuple[str, str | None]] = {}
        self._progress_seen: dict[str, dict[str, Any]] = {}

    def subscribe(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        q: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_MAX)
        self.subscribers.add(q)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="ui-live-feed")
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        self.subscribers.discard(q)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        for q in list(self.subscribers):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait((kind, data))

    async def _run(self) -> None:
        since = iso_in(-2)
        while self.subscribers:
            try:
                since = await self.poll(since)
            except Exception:
                log.exception("live feed poll failed")
            await asyncio.sleep(POLL)

    async def poll(self, since: str) -> str:
        """Publish the changes since ``since``; returns the next ``since`` (a little overlap, deduplicated)."""
        now = iso_in(-1)
        async with self.core.db.read() as conn:
            async with conn.execute(VM_CHANGES, (since,)) as cur:
                vms = [dict(r) for r in await cur.fetchall()]
            async with conn.execute(JOB_CHANGES, (since, since)) as cur:
                jobs = [dict(r) for r in await cur.fetchall()]
            rows: list[dict[str, Any]] = []
            for sql in RES_CHANGES.values():
                async with conn.execute(sql, (since,)) as cur:
                    rows += [dict(r) for r in await cur.fetchall()]
        for vm in vms:
            if self._vm_seen.get(vm["uuid"]) != vm["state"]:
                self._vm_seen[vm["uuid"]] = vm["state"]
                self.publish("vm", {"uuid": vm["uuid"], "state": vm["state"]})
        self._resources(rows)
        for job in jobs:
            if self._job_seen.get(job["uuid"]) != job["state"]:
                self._job_seen[job["uuid"]] = job["state"]
                self.publish("job", job)
        items = dict(self.core.jobs.items)
        for uuid, p in items.items():
            if self._progress_seen.get(uuid) != p:
                self._progress_seen[uuid] = p
                self.publish("progress", {"uuid": uuid, "state": "Migrating", **progress_fields(p)})
        for uuid in [u for u in self._progress_seen if u not in items]:
            del self._progress_seen[uuid]
            self.publish("progress", {"uuid": uuid, "state": "Migrating", "done": True})
        if len(self._vm_seen) > 10000:
            self._vm_seen.clear()
        if len(self._job_seen) > 10000:
            self._job_seen.clear()
        return min(now, max([since, *(v["lastOpDate"] for v in vms), *(r["lastOpDate"] for r in rows)]))


    def _resources(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            seen = (str(row["state"]), None if row["status"] is None else str(row["status"]))
            if self._res_seen.get(row["uuid"]) != seen:
                self._res_seen[row["uuid"]] = seen
                self.publish("res", {"uuid": row["uuid"], "state": seen[0], "status": seen[1]})
        if len(self._res_seen) > 10000:
            self._res_seen.clear()


MiB = 1 << 20


def progress_fields(p: dict[str, Any]) -> dict[str, Any]:
    """What the console shows of one migration's progress: percent, memory and disk MiB processed/total."""
    out: dict[str, Any] = {"percent": p.get("percent"), "stage": p.get("stage")}
    for what in ("memory", "disk"):
        if p.get(f"{what}Total"):
            out[what] = [int(p.get(f"{what}Processed") or 0) // MiB, int(p[f"{what}Total"]) // MiB]
    return out


def progress_label(translate: Any, d: dict[str, Any]) -> str:
    """"Migrating 45% · Memory 70/128 MiB · Volumes 20/72 MiB" in the page's language (existing words only)."""
    if d.get("done"):
        return ""
    parts = [translate("Migrating") + (f" {d['percent']}%" if d.get("percent") is not None else "")]
    for key, word in (("memory", "Memory"), ("disk", "Volumes")):
        if d.get(key):
            parts.append(f"{translate(word)} {d[key][0]}/{d[key][1]} MiB")
    return " · ".join(parts)


FEED = web.AppKey("ui_feed", Feed)


def feed(app: web.Application) -> Feed:
    f = app.get(FEED)
    if f is None:
        f = Feed(app[CORE])
        app[FEED] = f
    return f  # type: ignore[no-any-return]


async def events(request: web.Request) -> web.StreamResponse:
    """``GET /ui/events``: ``event: vm`` {uuid, state, label}, ``event: res`` (a host, primary storage, VIP,
    EIP or port forwarding rule) {uuid, state, label, status, statusLabel}, ``event: job`` {uuid, apiName, state,
    label} and
    ``event: progress`` {uuid (the VM), percent, memory/disk [MiB processed, total], done, label}."""
    p = page(request)
    translate = i18n.translations(p.lang).gettext  # state words are marked in controller.ui.resources
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    f = feed(request.app)
    q = f.subscribe()
    try:
        await resp.write(b": connected\n\n")
        while True:
            try:
                kind, data = await asyncio.wait_for(q.get(), 15)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            label = progress_label(translate, data) if kind == "progress" else translate(data["state"])
            body = {**data, "label": label}
            if kind == "res":
                body["statusLabel"] = translate(data["status"]) if data["status"] else None
            await resp.write(f"event: {kind}\ndata: {json.dumps(body)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        f.unsubscribe(q)
    return resp
