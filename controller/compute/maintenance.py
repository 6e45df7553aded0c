"""Host maintenance: ``ChangeHostState stateEvent=maintain`` (1.0's ``HostBase.maintenanceHook``, reference
nfs-migration.md §B.6).

The host goes ``PreMaintenance`` (no VM is placed on it from then on: only Enabled hosts receive VMs), every VM on
it is moved away by MigrateVm's own path (:func:`controller.compute.migrate.migrate_away`: the same rules and the
same automatic choice of the receiving host), ``kvm/vm.migrationQuantity`` (1.0's setting, default 2) at a time,
each in the VM's queue; then the host is ``Maintenance``. A VM that is not Running (Unknown, or Running but unable
to move) is handled by ``host/maintenance.unmovableVmPolicy``:

* ``StopVm`` (the default, 1.0's behaviour): it is stopped (StopVmInstance's path: graceful, then forced). A
  stopped VM on local primary storage stays where its disks are.
* ``Refuse``: the call first checks, changing nothing, that every VM of the host is Running and has a receiving
  host (GetVmMigrationCandidateHosts' dry run) and refuses (409 SYS.1006 naming each VM and why) otherwise; a
  migration that still fails is a failure.

A failure half-way (a VM neither moved nor stopped): the host goes back to the state it had, the VMs already moved
stay on their new hosts (each migration committed on its own), and the error (409 SYS.1006) names every VM that
failed and why. ``stateEvent=enable`` leaves Maintenance; maintain on a host in Maintenance is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controller.api.context import ApiContext
from controller.compute import migrate
from controller.core import Controller
from controller.errors import ApiError, OperationError
from controller.globalconfig import ConfigDef, register_config
from controller.util import now_iso

log = logging.getLogger(__name__)

QUANTITY = register_config(ConfigDef(
    "kvm", "vm.migrationQuantity", "2", int, min=1,
    description="How many VMs a host entering maintenance migrates at a time (1.0's kvm.vm.migrationQuantity)."))
POLICY = register_config(ConfigDef(
    "host", "maintenance.unmovableVmPolicy", "StopVm", valid=("StopVm", "Refuse"),
    description="A VM that cannot migrate away from a host entering maintenance: StopVm stops it (1.0), Refuse "
                "makes ChangeHostState maintain fail (checked before anything moves; the host returns to its "
                "state if a migration still fails)."))


async def _set_state(core: Controller, host_uuid: str, state: str) -> None:
    async with core.db.write() as tx:
        await tx.update("Host", {"uuid": host_uuid}, {"state": state, "lastOpDate": now_iso()})


async def _vms_on(core: Controller, host_uuid: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await core.db.fetchall(
        "SELECT uuid, state FROM VmInstance WHERE hostUuid=? ORDER BY createDate", (host_uuid,))]


async def _unmovable(core: Controller, vms: list[dict[str, Any]]) -> dict[str, str]:
    """VM uuid → why it cannot migrate now (the dry run of MigrateVm's rules)."""
    out: dict[str, str] = {}
    for vm in vms:
        try:
            await migrate.migration_target(core, vm["uuid"])
        except ApiError as e:
            out[vm["uuid"]] = e.details
    return out


def _names(failed: dict[str, str]) -> str:
    return "; ".join(f"vm[uuid:{u}]: {why}" for u, why in failed.items())


async def _empty_one(core: Controller, host_uuid: str, vm_uuid: str, policy: str) -> str | None:
    """Move (or stop) one VM of the host in its queue; the reason it is still there, or None."""
    from controller.compute.vms import StopVmInstanceMsg, stop_vm_instance

    row = await core.db.fetchone("SELECT state, hostUuid FROM VmInstance WHERE uuid=?", (vm_uuid,))
    if row is None or row["hostUuid"] != host_uuid:
        return None  # gone, stopped or moved meanwhile
    why = f"it is {row['state']}, only a Running vm migrates"
    if row["state"] == "Running":
        try:
            await migrate.migrate_away(core, vm_uuid)
            log.info("maintenance of host %s: vm %s migrated away", host_uuid, vm_uuid)
            return None
        except ApiError as e:
            why = f"it could not migrate: {e.details}"
    if policy != "StopVm" or row["state"] not in ("Running", "Unknown"):
        return why
    log.warning("maintenance of host %s: vm %s is stopped (%s)", host_uuid, vm_uuid, why)
    try:
        await stop_vm_instance(ApiContext(core, "StopVmInstance"), StopVmInstanceMsg.model_validate({"uuid": vm_uuid}))
    except ApiError as e:
        return f"{why}; stopping it failed too: {e.details}"
    return None


async def maintain(ctx: ApiContext, host_uuid: str) -> None:
    """Empty the host and put it in Maintenance (see the module docstring); runs in the host's queue."""
    core = ctx.core
    host = await ctx.require("Host", host_uuid, "uuid")
    if host["state"] == "Maintenance":
        return
    former = "Enabled" if host["state"] == "PreMaintenance" else host["state"]  # PreMaintenance: a crash's leftover
    configs = core.services["configs"]
    policy = configs.get(POLICY.category, POLICY.name)
    vms = await _vms_on(core, host_uuid)
    if policy == "Refuse" and (unmovable := await _unmovable(core, vms)):
        raise OperationError(f"host[uuid:{host_uuid}] cannot enter maintenance: {len(unmovable)} vm(s) cannot "
                             f"migrate away ({_names(unmovable)}) and global config host/"
                             f"{POLICY.name} is Refuse (StopVm would stop them); nothing was changed")
    await _set_state(core, host_uuid, "PreMaintenance")
    failed: dict[str, str] = {}
    try:
        sem = asyncio.Semaphore(int(configs.get(QUANTITY.category, QUANTITY.name)))

        async def one(vm_uuid: str) -> None:
            async with sem:
                why = await core.queues.run(vm_uuid, lambda: _empty_one(core, host_uuid, vm_uuid, policy))
            if why is not None:
                failed[vm_uuid] = why

        errors = [r for r in await asyncio.gather(*(one(vm["uuid"]) for vm in vms), return_exceptions=True)
                  if isinstance(r, BaseException)]
        if errors:  # not a refusal: a bug or a cancellation, raised once every VM's work has ended
            raise errors[0]
        for vm in await _vms_on(core, host_uuid):  # placed here before PreMaintenance was written, or not movable
            failed.setdefault(vm["uuid"], f"it is still on the host ({vm['state']})")
    except BaseException:
        await _set_state(core, host_uuid, former)
        raise
    if failed:
        await _set_state(core, host_uuid, former)
        moved = len(vms) - len(failed)
        raise OperationError(f"host[uuid:{host_uuid}] did not enter maintenance: {len(failed)} vm(s) are still on "
                             f"it ({_names(failed)}); the host is {former} again, the {moved} other vm(s) stay where "
                             "they were moved or stopped")
    await _set_state(core, host_uuid, "Maintenance")
