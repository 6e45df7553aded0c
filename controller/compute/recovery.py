"""Crash recovery (issue 18, reliability 1): what a killed controller or a lost host left half done is
finished or rolled back, and what it held is released.

When (all idempotent, each VM handled in its own work queue and skipped while an operation of this
process runs there, so a live operation is never second-guessed):

* At controller start (after the jobs still ``Processing`` were marked Failed by :mod:`controller.jobs`):
  the database-only repairs at once (:func:`release_leaks`), hosts left ``Connecting`` by an interrupted
  AddKvmHost / reconnect are resolved, then a background task asks every Connected host for its domains
  (``/vm/vmsync``) and reconciles its VMs (:func:`reconcile_host`). A host that does not answer is left
  to its reconnect.
* At every host (re)connect (the ``host.connected`` extension point): :func:`reconcile_host`.

What a VM in a transitional state becomes, given what its host really runs:

=================  ====================================  ===========================================
state              domain Running on the VM's host        no domain (or not running)
=================  ====================================  ===========================================
Starting/Created   Running (the start had succeeded)      a create (never ran anywhere): rolled back
                                                          entirely as a failed create (domain, root
                                                          volume, flat DHCP entries, IPs, capacity,
                                                          local-storage capacity, rows); a start:
                                                          Stopped, capacity returned
Stopping           Running                                Stopped, capacity returned
Rebooting          Running                                Stopped, capacity returned
Migrating          Running (the migration had not moved it)  running on another Connected host of its zone
                                                          (libvirt had moved it): the migration is committed
                                                          there (``migrate.adopt_migrated``); nowhere: Stopped,
                                                          capacity returned
Destroying         the destroy is finished (DestroyVmInstance's own path: domain, capacity, IPs, policy)
=================  ====================================  ===========================================

A Migrating VM whose source host still runs the migration job (its agent carries on after the controller that
asked for it died) is left Migrating until the job ends: the next VM sync of the host (ping) or its reconnect
settles it by the table above (stopping the paused source domain, or calling it Running there, would lose the
guest or where it ends up).

After every Connected host's transitional VMs are settled, each host's VMs are synced with what it runs (the
VM sync of a reconnect: a domain that stopped or vanished while no controller listened), and the routers are
checked once at once (:mod:`controller.vrouter_provider.recovery`).

A domain running on a host that no VM row places there (no row, or a Destroyed/Expunging one) is an
*orphan*: reported in the log (and by ``CheckConsistency``), and destroyed when the global config
``vm/orphanDomain.destroy`` is true (default false: an operator decides).

Database-only repairs (:func:`release_leaks`, at start): a host's available CPU/memory is derived again
from the VMs holding it, a local storage's available capacity from its resource refs (a volume
migration's reservation dies with the controller), and ``UsedIp`` rows of ``VmNic`` that no NIC holds
are returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from controller.api.context import ApiContext
from controller.compute import extensions, migrate, tracer
from controller.compute.capacity import move_vm
from controller.compute.connect import parse_size
from controller.core import Controller, on_start
from controller.errors import ApiError, OperationError
from controller.globalconfig import ConfigDef, register_config
from controller.storage.capacity import sync_ps
from controller.util import now_iso
from kvmagent.contract import migrate as mc
from kvmagent.contract import vm as vc

log = logging.getLogger(__name__)

ORPHAN_DESTROY = register_config(ConfigDef(
    "vm", "orphanDomain.destroy", "false", bool,
    description="Destroy a domain found running on a host that no VM record places there (found at controller "
                "start and host reconnect). Off: the domain is only reported (log, CheckConsistency)."))

TRANSITIONAL = ("Created", "Starting", "Stopping", "Rebooting", "Migrating", "Destroying")
SYNC_TIMEOUT = 15.0


def _ctx(core: Controller) -> ApiContext:
    return ApiContext(core, "Recovery")


# ---------------------------------------------------------------- database-only repairs
async def release_leaks(core: Controller) -> dict[str, int]:
    """Host capacity from the VMs holding it, local-storage capacity from its refs, leaked VM IPs returned.
    Only correct while no operation runs (controller start; ``CheckConsistency --repair`` runs the IP part
    only, which is safe at any time). Returns what changed per kind."""
    reserved = parse_size(core.services["configs"].get("kvm", "reservedMemory"))
    out = {"hostCapacity": 0, "localStorageCapacity": 0, "ips": 0}
    async with core.db.write() as tx:
        cur = await tx.execute(
            "UPDATE Host SET "
            "availableCpuCapacity = totalCpuCapacity - (SELECT COALESCE(SUM(cpuNum * cpuSpeed), 0) FROM VmInstance v "
            "WHERE v.hostUuid = Host.uuid), "
            "availableMemoryCapacity = MAX(0, totalMemoryCapacity - ?) - (SELECT COALESCE(SUM(memorySize), 0) "
            "FROM VmInstance v WHERE v.hostUuid = Host.uuid) "
            "WHERE totalCpuCapacity IS NOT NULL AND (availableCpuCapacity != totalCpuCapacity - (SELECT "
            "COALESCE(SUM(cpuNum * cpuSpeed), 0) FROM VmInstance v WHERE v.hostUuid = Host.uuid) OR "
            "availableMemoryCapacity != MAX(0, totalMemoryCapacity - ?) - (SELECT COALESCE(SUM(memorySize), 0) "
            "FROM VmInstance v WHERE v.hostUuid = Host.uuid))", (reserved, reserved))
        out["hostCapacity"] = cur.rowcount
        rows = await tx.fetchall(
            "SELECT h.primaryStorageUuid, h.hostUuid, h.totalCapacity - COALESCE((SELECT SUM(r.size) FROM "
            "LocalStorageResourceRef r WHERE r.primaryStorageUuid = h.primaryStorageUuid AND r.hostUuid = "
            "h.hostUuid), 0) AS want, h.availableCapacity FROM LocalStorageHostRef h")
        for r in rows:
            if int(r["want"]) != int(r["availableCapacity"] or 0):
                await tx.execute("UPDATE LocalStorageHostRef SET availableCapacity=?, lastOpDate=? WHERE "
                                 "primaryStorageUuid=? AND hostUuid=?",
                                 (int(r["want"]), now_iso(), r["primaryStorageUuid"], r["hostUuid"]))
                await sync_ps(tx, r["primaryStorageUuid"])
                out["localStorageCapacity"] += 1
        out["ips"] = await release_leaked_ips(tx)
    if any(out.values()):
        log.warning("recovery: released leaked capacity/IPs: %s", out)
    return out


async def release_leaked_ips(tx: Any) -> int:
    """Delete ``UsedIp`` rows allocated for a VM NIC that no NIC holds (a NIC's IP is allocated and recorded in
    one transaction, so this is safe while operations run)."""
    cur = await tx.execute("DELETE FROM UsedIp WHERE usedFor='VmNic' AND uuid NOT IN "
                           "(SELECT usedIpUuid FROM VmNic WHERE usedIpUuid IS NOT NULL)")
    return int(cur.rowcount)


async def resolve_connecting_hosts(core: Controller, interrupted: list[dict[str, Any]]) -> None:
    """A host left ``Connecting``: the AddKvmHost that was adding it failed (its row goes, as AddKvmHost's
    own failure path does, when no VM is on it); otherwise (an interrupted reconnect) it becomes
    Disconnected, so the ping task reconnects it."""
    adding = {str(j["resourceUuid"]).removeprefix("host-ip:") for j in interrupted
              if j["apiName"] in ("AddKvmHost", "AddKVMHost") and j["resourceUuid"]}
    for h in await core.db.fetchall("SELECT uuid, managementIp FROM Host WHERE status='Connecting'"):
        async with core.db.write() as tx:
            vms = await tx.fetchone("SELECT COUNT(*) FROM VmInstance WHERE hostUuid=? OR lastHostUuid=?",
                                    (h["uuid"], h["uuid"]))
            if h["managementIp"] in adding and not (vms and vms[0]):
                await tx.execute("DELETE FROM Host WHERE uuid=?", (h["uuid"],))
                log.warning("recovery: host %s (%s) was being added when the controller stopped; removed",
                            h["uuid"], h["managementIp"])
            else:
                await tx.update("Host", {"uuid": h["uuid"]}, {"status": "Disconnected", "lastOpDate": now_iso()})
                log.warning("recovery: host %s was Connecting when the controller stopped; Disconnected "
                            "(reconnected by the ping task)", h["uuid"])


async def resolve_interrupted_maintenance(core: Controller) -> list[str]:
    """A host left ``PreMaintenance``: the ChangeHostState maintain that was emptying it died with the
    controller (each VM moved so far is committed on its own; crash recovery settles one caught moving). The
    state it had before is not known, so it becomes Disabled: no VM is placed on it until the operator runs
    maintain again (which moves what is left) or enable."""
    fixed = []
    for h in await core.db.fetchall("SELECT uuid FROM Host WHERE state='PreMaintenance'"):
        async with core.db.write() as tx:
            await tx.update("Host", {"uuid": h["uuid"], "state": "PreMaintenance"},
                            {"state": "Disabled", "lastOpDate": now_iso()})
        fixed.append(str(h["uuid"]))
        log.warning("recovery: host %s was entering maintenance when the controller stopped; Disabled (run "
                    "ChangeHostState maintain again to finish, or enable)", h["uuid"])
    return fixed


# ---------------------------------------------------------------- per host / per VM
async def reconcile_host(core: Controller, host: dict[str, Any], states: dict[str, str]) -> dict[str, str]:
    """Reconcile every VM of ``host`` in a transitional state with ``states`` (the host's ``/vm/vmsync``), then
    handle orphan domains. Returns vm uuid → what was done. Never raises for one VM (logged)."""
    done: dict[str, str] = {}
    rows = await core.db.fetchall(
        f"SELECT uuid FROM VmInstance WHERE hostUuid=? AND state IN ({','.join('?' * len(TRANSITIONAL))})",
        (host["uuid"], *TRANSITIONAL))
    for r in rows:
        uuid = r["uuid"]
        if core.queues.is_busy(uuid):
            continue  # an operation of this process runs on it: its own result sets the state
        def work(u: str = uuid) -> Awaitable[str | None]:
            return reconcile_vm(core, host, u, states.get(u))

        try:
            what = await core.queues.run(uuid, work)
        except Exception as e:  # one VM never stops the others
            log.exception("recovery of vm %s on host %s failed", uuid, host["uuid"])
            what = f"failed: {e}"
        if what:
            done[uuid] = what
    for uuid, what in (await handle_orphans(core, host, states)).items():
        done[uuid] = what
    return done


async def reconcile_vm(core: Controller, host: dict[str, Any], uuid: str, domain: str | None) -> str | None:
    """Finish or roll back the interrupted operation of one VM (inside its work queue)."""
    row = await core.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (uuid,))
    if row is None or row["state"] not in TRANSITIONAL or row["hostUuid"] != host["uuid"]:
        return None
    vm = dict(row)
    running = domain == "Running"
    state = vm["state"]
    if state == "Migrating" and domain is not None and await _still_migrating(core, host, uuid):
        log.warning("recovery: vm %s is Migrating and its host %s still runs the migration; settled when it ends "
                    "(next VM sync of the host or its reconnect)", uuid, host["uuid"])
        return None
    if state == "Destroying":
        what = await _finish_destroy(core, vm)
    elif running:
        if state == "Migrating":
            await migrate.end_expectations(core, vm)
        async with core.db.write() as tx:
            await tx.execute("UPDATE VmInstance SET state='Running', lastOpDate=? WHERE uuid=? AND state=?",
                             (now_iso(), uuid, state))
        what = "Running (the domain runs on its host)"
    elif state in ("Starting", "Created") and vm["lastHostUuid"] is None:
        await _rollback_create(core, host, vm, domain)
        what = "rolled back (an interrupted create; no running domain)"
    elif state == "Migrating" and (dest := await migrate.find_migrated(core, vm)) is not None:
        await migrate.adopt_migrated(core, vm, dest)
        what = f"Running on host {dest['uuid']} (the interrupted migration had moved it: committed there)"
    else:
        if domain is not None:  # defined but not running (Paused, Stopped...): make it go away like a stop
            await core.services["agents"].call(host, vc.StopVmCmd(uuid=uuid, timeout=0, force=True), timeout=60)
        async with core.db.write() as tx:
            await move_vm(tx, uuid, expect_host=host["uuid"], host=None, state="Stopped")
        await extensions.run_quietly("vm.stopped", core, host_uuid=host["uuid"], vm=vm)
        what = "Stopped (no running domain; capacity returned)"
    log.warning("recovery: vm %s was %s on host %s (domain: %s) → %s", uuid, state, host["uuid"],
                domain or "none", what)
    return what


async def _still_migrating(core: Controller, host: dict[str, Any], uuid: str) -> bool:
    """Whether the source host's libvirt still runs the migration job of ``uuid`` (its agent carries on after the
    controller that asked for it died): stopping or re-placing the VM now would kill the guest or lose where it
    ends up."""
    try:
        reply = await core.services["agents"].call(host, mc.MigrationProgressCmd(uuid=uuid), timeout=15)
    except ApiError as e:
        log.warning("recovery: host %s did not say whether vm %s is still migrating: %s", host["uuid"], uuid,
                    e.details)
        return False
    return bool(reply.running)


async def _rollback_create(core: Controller, host: dict[str, Any], vm: dict[str, Any], domain: str | None) -> None:
    from controller.compute.vmcreate import remove_vm, rollback_on_host

    ctx = _ctx(core)
    if not await rollback_on_host(ctx, host, vm):
        raise OperationError(f"host {host['uuid']} did not confirm the domain of vm {vm['uuid']} is gone; the vm is "
                             "kept until its next reconnect")
    await extensions.run_quietly("vm.start_failed", core, host=host, vm=vm)
    await remove_vm(ctx, vm["uuid"])


async def _finish_destroy(core: Controller, vm: dict[str, Any]) -> str:
    """DestroyVmInstance's own path, from the state a destroy may start in (Unknown)."""
    from controller.api.messages import UuidDeleteMessage
    from controller.compute.vms import destroy_vm_instance

    async with core.db.write() as tx:
        await tx.execute("UPDATE VmInstance SET state='Unknown' WHERE uuid=? AND state='Destroying'", (vm["uuid"],))
    try:
        await destroy_vm_instance(_ctx(core), UuidDeleteMessage(uuid=vm["uuid"]))
    except ApiError as e:
        return f"Unknown (the destroy could not be finished: {e.details}; destroy it again)"
    return "destroyed (the interrupted destroy was finished)"


async def handle_orphans(core: Controller, host: dict[str, Any], states: dict[str, str]) -> dict[str, str]:
    """Domains on ``host`` that no VM row places there: reported, destroyed when ``vm/orphanDomain.destroy``."""
    out: dict[str, str] = {}
    for uuid in await orphan_domains(core, host["uuid"], states):
        if core.services["configs"].get_bool("vm", "orphanDomain.destroy"):
            try:
                await core.services["agents"].call(host, vc.DestroyVmCmd(uuid=uuid))
                out[uuid] = "orphan domain destroyed"
                log.warning("recovery: orphan domain %s on host %s destroyed (vm/orphanDomain.destroy)",
                            uuid, host["uuid"])
            except ApiError as e:
                out[uuid] = f"orphan domain not destroyed: {e.details}"
                log.error("recovery: orphan domain %s on host %s could not be destroyed: %s", uuid, host["uuid"],
                          e.details)
        else:
            out[uuid] = "orphan domain reported"
            log.error("orphan domain %s (%s) runs on host %s and no VM record claims it; destroy it (virsh destroy) "
                      "or set global config vm/orphanDomain.destroy=true", uuid, states[uuid], host["uuid"])
    return out


async def orphan_domains(core: Controller, host_uuid: str, states: dict[str, str]) -> list[str]:
    """Domains in ``states`` (of ``host_uuid``) with no VM row, or only a Destroyed/Expunging one. A live
    row on another host is not an orphan: the tracer moves that VM to where it runs."""
    out = []
    for uuid, st in states.items():
        if st not in ("Running", "Paused", "Unknown", "Crashed"):
            continue
        row = await core.db.fetchone("SELECT state FROM VmInstance WHERE uuid=?", (uuid,))
        if row is None or row["state"] in ("Destroyed", "Expunging"):
            out.append(uuid)
    return out


async def vm_states(core: Controller, host: dict[str, Any]) -> dict[str, str]:
    reply = await asyncio.wait_for(core.services["agents"].call(host, vc.VmSyncCmd(), timeout=SYNC_TIMEOUT),
                                   SYNC_TIMEOUT + 5)
    return dict(reply.states)


async def recover_hosts(core: Controller) -> dict[str, dict[str, str]]:
    """Every Connected host: its domains, then :func:`reconcile_host`. An unreachable host is left to its
    reconnect (the ping task), which reconciles it."""
    done: dict[str, dict[str, str]] = {}
    rows = await core.db.fetchall("SELECT * FROM Host WHERE status='Connected'")

    async def one(host: dict[str, Any]) -> None:
        try:
            states = await vm_states(core, host)
        except (ApiError, TimeoutError) as e:
            log.warning("recovery: host %s did not answer (%s); its VMs are reconciled at its reconnect",
                        host["uuid"], getattr(e, "details", e))
            return
        done[host["uuid"]] = await reconcile_host(core, host, states)

    await asyncio.gather(*(one(dict(r)) for r in rows))
    await asyncio.gather(*(_sync(core, dict(r)) for r in rows))
    core.services["recovery"]["done"] = True
    if (finished := core.services["recovery"].get("finished")) is not None:
        finished.set()
    return done


async def _sync(core: Controller, host: dict[str, Any]) -> None:
    """What changed on the host while no controller listened (a domain that stopped or vanished, one that
    started): the VM sync a reconnect or the next ping would make, made now. After every host's transitional VMs
    were settled, so a VM that migrated is on its new host before its domain is compared."""
    try:
        changed = await tracer.full_sync(core, host["uuid"], await vm_states(core, host))
    except (ApiError, TimeoutError) as e:
        log.warning("recovery: host %s did not answer its VM sync (%s); done at its reconnect", host["uuid"],
                    getattr(e, "details", e))
        return
    if changed:
        log.warning("recovery: %d vm(s) of host %s changed while the controller was down", changed, host["uuid"])


async def _host_connected(core: Controller, *, host: dict[str, Any]) -> None:
    await reconcile_host(core, host, await vm_states(core, host))


@on_start(70, "recovery")
async def _start(core: Controller) -> None:
    interrupted = list(core.jobs.interrupted)
    for j in interrupted:
        log.warning("recovery: job %s (%s, resource %s) was interrupted by the controller's stop", j["uuid"],
                    j["apiName"], j["resourceUuid"])
    # finished: set once every Connected host's VMs were reconciled and synced (the router recovery waits for it)
    core.services["recovery"] = {"done": False, "interrupted": interrupted, "finished": asyncio.Event()}
    await resolve_connecting_hosts(core, interrupted)
    await resolve_interrupted_maintenance(core)
    await release_leaks(core)

    async def run() -> None:
        await recover_hosts(core)

    core.tasks.start("recovery", run, restart=False)


extensions.register("host.connected", _host_connected)
