"""VM state tracer (reference §3.9): agent reports and full syncs → VM state changes.

Guarantees:

* A report is applied against the DB state read inside the same write transaction; the row is changed
  only while it still has that state and host (a stale report is dropped, never applied twice).
* Agent states map Running→Running, Stopped→Stopped, Paused/Crashed/Unknown→Unknown.
* Stopped on the VM's host (or on its lastHost while hostUuid is null) → Stopped with hostUuid null and
  capacity returned (through :func:`controller.compute.capacity.move_vm`); Running from Stopped/Unknown/
  an intermediate state or on another host → Running on the reporting host.
* VMs in an intermediate state (an operation is under way in their queue) and Created/Destroyed VMs are
  left alone by the full sync; the operation's own result sets their state.
"""

from __future__ import annotations

import logging
from typing import Any

from controller.compute import extensions, placement
from controller.compute.capacity import move_vm
from controller.compute.statemachine import INTERMEDIATE
from controller.core import Controller

log = logging.getLogger(__name__)

AGENT_TO_VM = {"Running": "Running", "Stopped": "Stopped", "Paused": "Unknown", "Crashed": "Unknown",
               "Unknown": "Unknown"}
_IGNORED_BY_SYNC = INTERMEDIATE | {"Created", "Destroyed", "Expunging", "Error"}


async def apply_report(core: Controller, host_uuid: str, vm_uuid: str, agent_state: str, *,
                       sync: bool = False) -> str | None:
    """Apply one report; returns the new VM state, or None when nothing changed."""
    to = AGENT_TO_VM.get(agent_state, "Unknown")
    async with core.db.write() as tx:
        row = await tx.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (vm_uuid,))
        if row is None:
            log.info("host %s reports unknown vm %s (%s); ignored", host_uuid, vm_uuid, agent_state)
            return None
        vm = dict(row)
        if sync and vm["state"] in _IGNORED_BY_SYNC:
            return None
        if vm["state"] in ("Destroyed", "Expunging", "Created"):
            return None
        if vm["state"] == to and vm["hostUuid"] == host_uuid:
            return None
        new = await _transition(tx, vm, host_uuid, to)
    if new:
        log.info("vm %s: %s → %s (host %s reported %s)", vm_uuid, vm["state"], new, host_uuid, agent_state)
        new_host = host_uuid if new == "Running" else (vm["hostUuid"] if new == "Unknown" else None)
        await extensions.run_quietly("vm.state_changed", core, vm_uuid=vm_uuid, before=vm["state"], after=new,
                                     old_host=vm["hostUuid"] or vm["lastHostUuid"], new_host=new_host)
        if sync and new == "Stopped" and vm["state"] in ("Running", "Unknown"):
            await extensions.run_quietly("vm.lost", core, vm_uuid=vm_uuid, host_uuid=host_uuid)
    return new


async def _transition(tx: Any, vm: dict[str, Any], host_uuid: str, to: str) -> str | None:
    here = vm["hostUuid"] == host_uuid or (vm["hostUuid"] is None and vm["lastHostUuid"] == host_uuid)
    if to == "Stopped":
        if not here:
            return None  # a stale stop from a host the VM left
        ok = await move_vm(tx, vm["uuid"], expect_host=vm["hostUuid"], host=None, state="Stopped")
        return "Stopped" if ok else None
    if to == "Running":
        ok = await move_vm(tx, vm["uuid"], expect_host=vm["hostUuid"], host=host_uuid, state="Running",
                           force=True)
        return "Running" if ok else None
    if vm["hostUuid"] != host_uuid:
        return None
    await tx.execute("UPDATE VmInstance SET state='Unknown' WHERE uuid=? AND state=?", (vm["uuid"], vm["state"]))
    return "Unknown"


async def full_sync(core: Controller, host_uuid: str, states: dict[str, str]) -> int:
    """Compare ``/vm/vmsync``'s states with the DB VMs of the host; returns the number of changes."""
    rows = await core.db.fetchall(
        "SELECT uuid, state FROM VmInstance WHERE hostUuid=? OR (hostUuid IS NULL AND lastHostUuid=?)",
        (host_uuid, host_uuid))
    changed = 0
    for r in rows:
        reported = states.get(r["uuid"], "Stopped")
        if r["state"] in _IGNORED_BY_SYNC or (r["state"] == AGENT_TO_VM.get(reported) and reported != "Running"):
            continue
        if await apply_report(core, host_uuid, r["uuid"], reported, sync=True):
            changed += 1
    known = {r["uuid"] for r in rows}
    for uuid, st in states.items():
        if uuid not in known and st == "Running" and await placement.may_report(core, host_uuid, uuid):
            if await apply_report(core, host_uuid, uuid, st, sync=True):
                changed += 1
    return changed


async def host_disconnected(core: Controller, host_uuid: str) -> None:
    """A Disconnected host puts every VM on it in Unknown (reference §3.9)."""
    async with core.db.write() as tx:
        await tx.execute("UPDATE VmInstance SET state='Unknown' WHERE hostUuid=? AND state NOT IN "
                         "('Destroyed', 'Expunging', 'Created', 'Destroying')", (host_uuid,))
