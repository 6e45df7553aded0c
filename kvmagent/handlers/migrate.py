"""Live migration endpoints (see :mod:`kvmagent.contract.migrate`): prepare and done on the destination, the
migration itself on the source."""

from __future__ import annotations

import os
from pathlib import Path

from kvmagent.context import AgentContext
from kvmagent.contract.base import AgentError, AgentReply
from kvmagent.contract.migrate import (
    MigrateVmCmd,
    MigrateVmReply,
    MigrationDiskTO,
    MigrationDoneCmd,
    MigrationProgressCmd,
    MigrationProgressReply,
    PrepareMigrationCmd,
    PrepareMigrationReply,
)
from kvmagent.driver.base import VmState
from kvmagent.routing import handles
from storage import files, qemuimg
from storage.errors import Conflict, NotFound
from storage.layout import partial_path
from zsutil.revert import Reverter

#: Every state a migrating domain passes through (paused for the switch-over, stopped when it left, running again
#: when a failed migration resumes it): the agent's own doing on both hosts while the migration runs.
MIGRATION_STATES = {VmState.RUNNING, VmState.PAUSED, VmState.STOPPED}


async def _create_disks(ctx: AgentContext, storage_path: str, disks: list[MigrationDiskTO]) -> list[str]:
    if ctx.storage is None:
        raise AgentError("STORAGE.UNAVAILABLE", "this agent has no storage service", status=503)
    st = ctx.storage.local(storage_path)
    planned: list[tuple[Path, Path | None, MigrationDiskTO]] = []
    for i, d in enumerate(disks):
        path = st.layout.contain(d.path, f"disks[{i}].path")
        backing = st.layout.contain(d.backingFile, f"disks[{i}].backingFile") if d.backingFile else None
        if path.exists():
            raise Conflict(f"{path} already exists on the destination host; a migration never overwrites a file",
                           details={"field": f"disks[{i}].path", "value": str(path)})
        if backing is not None and not backing.is_file():
            raise NotFound(f"backing file {backing} is not on the destination host (copy the base image first)",
                           details={"field": f"disks[{i}].backingFile", "value": str(backing)})
        planned.append((path, backing, d))
    created: list[str] = []
    async with Reverter() as r:
        for path, backing, d in planned:
            r.add(files.remove_dirs, files.make_dirs(path.parent))
            tmp = partial_path(path)
            r.add(files.remove_file, tmp)
            # -u: the base image may be open in running guests here; the size is known
            await qemuimg.create(tmp, size=d.size, backing=backing, backing_fmt=d.backingFormat if backing else None,
                                 unsafe=backing is not None)
            os.replace(tmp, path)
            r.add(files.remove_file, path)
            created.append(str(path))
        r.success()
    return created


@handles(PrepareMigrationCmd)
async def prepare_migration(ctx: AgentContext, cmd: PrepareMigrationCmd) -> PrepareMigrationReply:
    created: list[str] = []
    if cmd.disks:
        if not cmd.storagePath:
            raise AgentError("VM.INVALID_SPEC", "storagePath is required with disks", status=400,
                             details={"field": "storagePath", "value": None})
        created = await _create_disks(ctx, cmd.storagePath, cmd.disks)  # a StorageError: the server maps it
    ctx.judger.expect_for(cmd.uuid, MIGRATION_STATES, cmd.expectSeconds)
    return PrepareMigrationReply(created=created)


@handles(MigrationDoneCmd)
async def migration_done(ctx: AgentContext, cmd: MigrationDoneCmd) -> AgentReply:
    ctx.judger.settle(cmd.uuid)
    return AgentReply()


@handles(MigrateVmCmd)
async def migrate_vm(ctx: AgentContext, cmd: MigrateVmCmd) -> MigrateVmReply:
    ctx.judger.expect(cmd.uuid, MIGRATION_STATES)
    try:
        elapsed, data = await ctx.driver.migrate_vm(cmd.uuid, cmd.destHostIp, copy_storage=cmd.copyStorage,
                                                    timeout=cmd.timeout)
    finally:
        ctx.judger.settle(cmd.uuid)
    left = await ctx.driver.vm_state(cmd.uuid)
    if left not in (None, VmState.STOPPED):
        raise AgentError("VM.MIGRATION_INCOMPLETE", f"libvirt reported the migration of VM {cmd.uuid} done but the "
                         f"domain is still {left} here", status=500, details={"vmUuid": cmd.uuid})
    return MigrateVmReply(elapsed=elapsed, dataTransferred=data)


@handles(MigrationProgressCmd)
async def migration_progress(ctx: AgentContext, cmd: MigrationProgressCmd) -> MigrationProgressReply:
    progress = await ctx.driver.migration_progress(cmd.uuid)
    if progress is None:
        return MigrationProgressReply(running=False)
    return MigrationProgressReply.model_validate({"running": True, **progress})
