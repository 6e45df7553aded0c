"""Jobs: long API work tracked in the ``Job`` table.

A job is created ``Processing``, runs as a task, and ends ``Succeeded`` or ``Failed`` with the reply body
and HTTP status it would have answered. ``GET /v1/jobs/{uuid}`` reads it. At start-up every job still
``Processing`` is marked ``Failed`` ("the controller restarted"), so no job stays in silent limbo.

Progress: work running inside a job (the job's task: :data:`CURRENT` names it) reports what it has done with
:meth:`Jobs.report` (one entry per item, e.g. per migrating VM: byte counts and ``percent``); ``GET /v1/jobs/{uuid}``
shows ``progress`` (the items and their sums) while the job runs. Progress lives in this controller's memory only:
a job outlives no controller (see above).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from controller.db import Database
from controller.errors import ApiError, NotFound
from controller.util import iso_in, new_uuid, now_iso

log = logging.getLogger(__name__)

JobResult = tuple[int, dict[str, Any]]
#: The uuid of the job whose task runs the current code (None outside jobs).
CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("zstack_job", default=None)
#: Byte counts summed over a job's items into its overall progress.
SUMMED = ("dataTotal", "dataProcessed", "dataRemaining", "memoryTotal", "memoryProcessed", "diskTotal",
          "diskProcessed")


class Jobs:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._tasks: dict[str, asyncio.Task[JobResult]] = {}
        #: the jobs :meth:`recover` found interrupted (uuid, apiName, resourceUuid): crash recovery reads them
        self.interrupted: list[dict[str, Any]] = []
        self._progress: dict[str, dict[str, dict[str, Any]]] = {}  # job uuid → item → its progress
        #: item (a resource uuid, e.g. a migrating VM) → its latest progress, while its job runs
        self.items: dict[str, dict[str, Any]] = {}

    def report(self, item: str, progress: dict[str, Any]) -> None:
        """Progress of ``item`` (a resource uuid) in the current job; also readable by item (:attr:`items`)."""
        self.items[item] = progress
        job = CURRENT.get()
        if job is not None and job in self._tasks:
            self._progress.setdefault(job, {})[item] = progress

    def forget(self, item: str) -> None:
        """``item`` is finished: its progress is no longer shown by item (its job keeps the last report)."""
        self.items.pop(item, None)

    def progress(self, uuid: str) -> dict[str, Any] | None:
        """The progress of running job ``uuid``: its items and their summed byte counts, ``percent`` overall."""
        items = self._progress.get(uuid)
        if not items:
            return None
        out: dict[str, Any] = {k: sum(int(p.get(k) or 0) for p in items.values()) for k in SUMMED}
        if out["dataTotal"] > 0:
            out["percent"] = max(0, min(100, (out["dataTotal"] - out["dataRemaining"]) * 100 // out["dataTotal"]))
        out["items"] = items
        return out

    async def recover(self) -> int:
        body = ApiError("the controller restarted while the job was running; check the resource's "
                        "state and retry").body()
        async with self.db.write() as tx:
            self.interrupted = [dict(r) for r in await tx.fetchall(
                "SELECT uuid, apiName, resourceUuid FROM Job WHERE state='Processing'")]
            cur = await tx.execute("UPDATE Job SET state='Failed', result=?, httpStatus=500, finishedDate=? "
                                   "WHERE state='Processing'", (json.dumps(body), now_iso()))
            return cur.rowcount

    async def submit(self, api_name: str, resource_uuid: str | None, session_uuid: str | None,
                     work: Callable[[], Awaitable[JobResult]]) -> tuple[str, asyncio.Task[JobResult]]:
        uuid = new_uuid()
        async with self.db.write() as tx:
            await tx.insert("Job", {"uuid": uuid, "apiName": api_name, "state": "Processing",
                                    "resourceUuid": resource_uuid, "sessionUuid": session_uuid,
                                    "createDate": now_iso()})
        task = asyncio.create_task(self._run(uuid, work), name=f"job-{api_name}-{uuid}")
        self._tasks[uuid] = task
        task.add_done_callback(lambda _t: (self._tasks.pop(uuid, None), self._progress.pop(uuid, None)))
        return uuid, task

    async def _run(self, uuid: str, work: Callable[[], Awaitable[JobResult]]) -> JobResult:
        CURRENT.set(uuid)  # this task's context only
        try:
            status, body = await work()
        except asyncio.CancelledError:
            status, body = 500, ApiError("the job was cancelled (controller shutting down)").body()
            await self._finish(uuid, status, body)
            raise
        await self._finish(uuid, status, body)
        return status, body

    async def _finish(self, uuid: str, status: int, body: dict[str, Any]) -> None:
        state = "Succeeded" if status < 400 else "Failed"
        async with self.db.write() as tx:
            await tx.execute("UPDATE Job SET state=?, result=?, httpStatus=?, finishedDate=? WHERE uuid=?",
                             (state, json.dumps(body), status, now_iso(), uuid))

    async def get(self, uuid: str) -> dict[str, Any]:
        row = await self.db.fetchone("SELECT * FROM Job WHERE uuid=?", (uuid,))
        if row is None:
            raise NotFound(f"job[uuid:{uuid}] not found")
        out = {"uuid": row["uuid"], "apiName": row["apiName"], "state": row["state"],
               "resourceUuid": row["resourceUuid"], "createDate": row["createDate"],
               "finishedDate": row["finishedDate"], "httpStatus": row["httpStatus"],
               "result": json.loads(row["result"]) if row["result"] else None}
        if row["state"] == "Processing" and (progress := self.progress(uuid)) is not None:
            out["progress"] = progress
        return out

    async def cleanup(self, older_than_seconds: float = 86400) -> None:
        async with self.db.write() as tx:
            await tx.execute("DELETE FROM Job WHERE state != 'Processing' AND finishedDate < ?",
                             (iso_in(-older_than_seconds),))

    async def cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
