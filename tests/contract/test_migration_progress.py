"""A migration is a job with progress: while MigrateVm runs, ``GET /v1/jobs/{uuid}`` shows the byte counts the
source agent reads from libvirt's job statistics (``/vm/migrate/progress``, polled by the controller), per VM
and summed; the finished job has its result and no progress; zstack-cli MigrateVm prints the progress while it
waits. Two real in-process agents (libvirt test driver).

The test driver cannot live-migrate and both agents share this machine's filesystem: the destination's disk
files are the source's (``/vm/migrate/prepare`` is told they are there, the source's are not deleted after),
and the source driver's migration is what libvirt does on two real hosts (the job's statistics, as
``virDomainGetJobStats`` reports them, in the agent's progress table while it runs, then the domain leaves the
source for the destination); every other step (controller, agents' endpoints, progress polling, commit, CLI) is
the real one. The real migration is proven on the testbed (tests/e2e/test_live_migration.py)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import test_controller_compute as tcc
from test_controller_compute import Env

from controller.cli.app import Cli
from controller.compute import migrate
from kvmagent.driver import migration
from kvmagent.handlers import migrate as agent_migrate
from kvmagent.server import CTX

env = tcc.env

MiB = 1 << 20
STATS = {"type": 2, "time_elapsed": 1500, "data_total": 200 * MiB, "data_processed": 90 * MiB,
         "data_remaining": 110 * MiB, "memory_total": 128 * MiB, "memory_processed": 70 * MiB,
         "memory_remaining": 58 * MiB, "disk_total": 72 * MiB, "disk_processed": 20 * MiB, "disk_remaining": 52 * MiB}


async def _job(e: Env, uuid: str) -> dict[str, Any]:
    r = await e.client.get(f"/v1/jobs/{uuid}", headers={"Authorization": f"OAuth {e.session}"})
    assert r.status == 200
    return dict(await r.json())


async def _until(e: Env, uuid: str, ok: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = await _job(e, uuid)
        if ok(job):
            return job
        assert job["state"] == "Processing" and time.monotonic() < deadline, f"{what}: {job}"
        await asyncio.sleep(0.1)


async def test_migrate_vm_job_carries_progress(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    e = env
    status, body = await e.create_vm("vm")
    assert status == 200, body
    vm = body["inventory"]
    src, dest = vm["hostUuid"], next(h["uuid"] for h in await e.hosts() if h["uuid"] != vm["hostUuid"])
    a, b = tcc._agent(e, src).app[CTX], tcc._agent(e, dest).app[CTX]
    release = asyncio.Event()

    async def shared_disks(ctx: Any, storage_path: str, disks: Any) -> list[str]:
        for d in disks:  # the one shared filesystem: the source's file is there
            assert await asyncio.to_thread(Path(d.path).is_file), d.path
        return []

    def libvirt_migrates(frm: Any, to: Any) -> Any:
        async def migrate_vm(vm_uuid: str, dest_ip: str, *, copy_storage: bool, timeout: float
                             ) -> tuple[float, int | None]:
            assert copy_storage
            migration.LIVE[vm_uuid] = migration.progress_from_stats(STATS)
            try:
                await asyncio.wait_for(release.wait(), 60)
                xml = await (await frm.driver._guest(vm_uuid, "reading")).xml(inactive=True)
                await (await to.driver.host.define(xml)).create()
                await frm.driver.destroy_vm(vm_uuid, undefine=True)
            finally:
                migration.LIVE.pop(vm_uuid, None)
            return 2.0, 210 * MiB
        return migrate_vm

    async def keep_shared_files(self: Any) -> None:  # the source's files ARE the destination's here
        return None

    monkeypatch.setattr(agent_migrate, "_create_disks", shared_disks)
    monkeypatch.setattr(migrate.Migration, "_delete_source_files", keep_shared_files)
    monkeypatch.setattr(a.driver, "migrate_vm", libvirt_migrates(a, b))
    monkeypatch.setattr(b.driver, "migrate_vm", libvirt_migrates(b, a))
    r = await e.client.post("/v1/MigrateVm?async=true", json={"vmInstanceUuid": vm["uuid"], "hostUuid": dest},
                            headers={"Authorization": f"OAuth {e.session}"})
    assert r.status == 202, await r.text()
    job_uuid = (await r.json())["jobUuid"]
    job = await _until(e, job_uuid, lambda j: (j.get("progress") or {}).get("memoryProcessed"), "no progress")
    assert job["state"] == "Processing" and job["apiName"] == "MigrateVm" and job["resourceUuid"] == vm["uuid"]
    p = job["progress"]
    item = p["items"][vm["uuid"]]
    assert (item["stage"], item["hostUuid"], item["destHostUuid"]) == ("migrating", src, dest), item
    assert (item["memoryTotal"], item["memoryProcessed"], item["diskTotal"], item["diskProcessed"]) == (
        128 * MiB, 70 * MiB, 72 * MiB, 20 * MiB), item
    assert item["percent"] == 45 and item["elapsedMs"] == 1500, item
    assert (p["dataTotal"], p["dataProcessed"], p["percent"]) == (200 * MiB, 90 * MiB, 45), p
    assert e.core.jobs.items[vm["uuid"]]["percent"] == 45  # by VM, for the console's VM page
    assert (await e.vm(vm["uuid"]))["state"] == "Migrating"
    release.set()
    job = await _until(e, job_uuid, lambda j: j["state"] != "Processing", "the job did not finish")
    assert job["state"] == "Succeeded" and job["httpStatus"] == 200 and "progress" not in job, job
    assert (job["result"]["inventory"]["hostUuid"], job["result"]["inventory"]["state"]) == (dest, "Running")
    assert vm["uuid"] not in e.core.jobs.items
    await tcc._capacity_exact(e)

    # zstack-cli MigrateVm waits for the job and prints its progress on stderr while it runs
    release.clear()
    out, err = io.StringIO(), io.StringIO()
    cli = Cli(e.url, tmp_path / "cli", out=out, err=err)
    assert await asyncio.to_thread(cli.run_tokens, ["LogInByAccount", "accountName=admin", "password=password"]) == 0, \
        err.getvalue()
    done = asyncio.ensure_future(asyncio.to_thread(cli.run_tokens, ["MigrateVm", f"vmInstanceUuid={vm['uuid']}"]))
    deadline = time.monotonic() + 60
    while "memory 70/128 MiB" not in err.getvalue():
        assert not done.done() and time.monotonic() < deadline, err.getvalue()
        await asyncio.sleep(0.1)
    release.set()
    assert await done == 0, err.getvalue()
    line = next(ln for ln in err.getvalue().splitlines() if "memory 70/128 MiB" in ln)
    assert line == f"progress: 45% vm {vm['uuid'][:8]} migrating (memory 70/128 MiB, disk 20/72 MiB) 45%", line
    moved = json.loads(cli.outputs[-1])
    assert (moved["inventory"]["hostUuid"], moved["inventory"]["state"]) == (src, "Running"), moved
