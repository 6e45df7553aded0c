"""VM deletion policies (reference §3.10, seed §8): Direct, Delay (default) and Never; recover and expunge.

* Destroy with **Direct**: the VM is gone at once — domain, root volume bits, NICs and rows.
* **Delay**: the VM is ``Destroyed`` (IPs and capacity returned, root volume ``Deleted`` with its bits kept) and the
  expunge task removes it ``vm/expungePeriod`` seconds after its last operation. **Never**: like Delay, but the task
  never expunges it (ZStack-Py follows the 1.0 documentation here, not the 1.0 code).
* ``RecoverVmInstance`` brings a Destroyed VM back to ``Stopped`` (root volume ``Ready``); its IPs are allocated
  again at its next start (:func:`reallocate_ips`). ``ExpungeVmInstance`` removes a Destroyed VM now.
* The expunge task runs every ``vm/expungeInterval`` seconds and restarts when either config changes.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import UuidMessage
from controller.api.registry import api, by_uuid
from controller.compute import statemachine as sm
from controller.compute.vmcreate import static_ips
from controller.compute.vmstart import delete_root
from controller.core import Controller, on_start
from controller.db.database import Tx
from controller.errors import ApiError, NotFound
from controller.resources import ipam
from controller.storage import capacity as storage_capacity
from controller.storage import expunge_task
from controller.util import now_iso

log = logging.getLogger(__name__)

CATEGORY = "vm"


def policy(core: Controller) -> str:
    return expunge_task.policy(core, CATEGORY)


async def reallocate_ips(tx: Tx, core: Controller, vm_uuid: str) -> None:
    """Give every NIC of the VM without an address a new one (a recovered VM), honouring staticIp tags."""
    nics = await tx.fetchall("SELECT uuid, l3NetworkUuid FROM VmNic WHERE vmInstanceUuid=? AND usedIpUuid IS NULL "
                             "AND l3NetworkUuid IS NOT NULL", (vm_uuid,))
    if not nics:
        return
    tags = [r["tag"] for r in await tx.fetchall(
        "SELECT tag FROM SystemTag WHERE resourceUuid=? AND tag LIKE 'staticIp::%'", (vm_uuid,))]
    static = static_ips(tags)
    for nic in nics:
        l3 = nic["l3NetworkUuid"]
        used = await (ipam.allocate_ip(tx, l3, static[l3], used_for="VmNic") if l3 in static
                      else ipam.allocate(tx, l3, used_for="VmNic"))
        await tx.update("VmNic", {"uuid": nic["uuid"]}, {"usedIpUuid": used["uuid"], "ip": used["ip"],
                                                       "netmask": used["netmask"], "gateway": used["gateway"],
                                                       "lastOpDate": now_iso()})


async def expunge(core: Controller, vm: dict[str, Any]) -> None:
    """Remove a Destroyed VM for good: root volume bits on its last host (when reachable), then the rows and
    the root volume's capacity refs. Bits that cannot be reached are logged (the host may be gone); the rows
    and refs go in one transaction."""
    root = await core.db.fetchone("SELECT * FROM Volume WHERE uuid=?", (vm["rootVolumeUuid"],))
    host = None
    if vm["lastHostUuid"]:
        host = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (vm["lastHostUuid"],))
    if root is not None and root["installPath"] and host is not None and host["status"] == "Connected":
        try:
            await delete_root(core, dict(host), root["installPath"])
        except ApiError as e:
            log.warning("expunge of vm %s: root volume %s not deleted on host %s: %s", vm["uuid"],
                        root["installPath"], host["uuid"], e.details)
    async with core.db.write() as tx:
        for nic in await tx.fetchall("SELECT usedIpUuid FROM VmNic WHERE vmInstanceUuid=?", (vm["uuid"],)):
            if nic["usedIpUuid"]:
                await ipam.release(tx, nic["usedIpUuid"])
        # the root volume's (and its snapshots') local-storage refs go with it: their capacity is returned
        for snap in await tx.fetchall("SELECT uuid FROM VolumeSnapshot WHERE volumeUuid=?", (vm["rootVolumeUuid"],)):
            await storage_capacity.remove_resource(tx, snap["uuid"])
        await storage_capacity.remove_resource(tx, vm["rootVolumeUuid"])
        await tx.execute("DELETE FROM Volume WHERE uuid=?", (vm["rootVolumeUuid"],))
        await tx.execute("DELETE FROM VmInstance WHERE uuid=?", (vm["uuid"],))
    log.info("vm %s (%s) expunged", vm["uuid"], vm["name"])


async def expunge_due(core: Controller) -> int:
    """One run of the expunge task; returns how many VMs were due."""
    return await expunge_task.run_due(core, CATEGORY, "SELECT uuid FROM VmInstance WHERE state='Destroyed' AND "
                                      "lastOpDate <= ?", functools.partial(_expunge_if_still_destroyed, core))


async def _expunge_if_still_destroyed(core: Controller, uuid: str, bound: str) -> None:
    row = await core.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (uuid,))
    if row is not None and row["state"] == "Destroyed":
        await expunge(core, dict(row))


@on_start(60, "vm-deletion")
async def _bootstrap(core: Controller) -> None:
    expunge_task.install(core, CATEGORY, expunge_due)  # task "vm-expunge"


async def _destroyed_vm(ctx: ApiContext, uuid: str, api_name: str) -> dict[str, Any]:
    row = await ctx.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (uuid,))
    if row is None:
        raise NotFound(f"invalid field[uuid], resource[uuid:{uuid}, type:VmInstanceVO] not found (an expunged VM "
                       "cannot be recovered)")
    sm.check_allowed(uuid, row["state"], api_name)
    return dict(row)


class RecoverVmInstanceMsg(UuidMessage):
    pass


@api("RecoverVmInstance", RecoverVmInstanceMsg, queue=by_uuid)
async def recover_vm_instance(ctx: ApiContext, msg: RecoverVmInstanceMsg) -> dict[str, Any]:
    """Bring a Destroyed VM back as Stopped; its IPs are allocated again when it starts."""
    vm = await _destroyed_vm(ctx, msg.uuid, "RecoverVmInstance")
    async with ctx.db.write() as tx:
        root = await tx.fetchone("SELECT installPath FROM Volume WHERE uuid=?", (vm["rootVolumeUuid"],))
        status = "Ready" if root is not None and root["installPath"] else "NotInstantiated"
        await tx.execute("UPDATE Volume SET status=?, lastOpDate=? WHERE uuid=?",
                         (status, now_iso(), vm["rootVolumeUuid"]))
        await tx.update("VmInstance", {"uuid": msg.uuid}, {"state": sm.next_state("Destroyed", "stopped"),
                                                          "lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("VmInstance", msg.uuid)}


@api("ExpungeVmInstance", UuidMessage, job=True, queue=by_uuid)
async def expunge_vm_instance(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """Remove a Destroyed VM now: its root volume bits, NICs and rows."""
    vm = await _destroyed_vm(ctx, msg.uuid, "ExpungeVmInstance")
    await expunge(ctx.core, vm)
    return {}
