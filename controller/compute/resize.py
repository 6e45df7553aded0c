"""``ChangeInstanceOffering`` (1.0): give a VM another instance offering's CPU and memory.

As 1.0 did (VmInstanceBase.changeOffering), not by hot-adding: libvirt can add vCPUs and memory to a running
domain only up to the maximums its XML was defined with, and ZStack-Py defines domains with current = maximum.

* Stopped: the VM's cpuNum, cpuSpeed and memorySize become the offering's at once (a stopped VM holds no host
  capacity, so nothing else moves).
* Running: instanceOfferingUuid changes at once; the new figures are kept in 1.0's inherent system tag
  ``pendingCapacityChange::cpuNum::{n}::cpuSpeed::{mhz}::memory::{bytes}`` and applied by
  :func:`apply_pending` at the VM's next StartVmInstance, BEFORE the host allocation, so capacity is reserved
  for the new size (a reboot keeps the running domain, and so the old size, as in 1.0). A second change while
  Running replaces the pending one.
* Refused (nothing written): an unknown VM or offering (404 naming the field), a VM in another state (409
  VM.1010; 1.0 allows Running and Stopped), a Disabled offering (409), an offering of another type (400).
"""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.compute import statemachine as sm
from controller.errors import InvalidArgument, OperationError
from controller.util import now_iso

PENDING = "pendingCapacityChange::cpuNum"  # the tag pattern's literal prefix (its key)


class ChangeInstanceOfferingMsg(ApiMessage):
    vmInstanceUuid: Uuid
    instanceOfferingUuid: Uuid


def _tag(cpu_num: int, cpu_speed: int, memory: int) -> str:
    return f"{PENDING}::{cpu_num}::cpuSpeed::{cpu_speed}::memory::{memory}"


@api("ChangeInstanceOffering", ChangeInstanceOfferingMsg, queue=lambda m: m.vmInstanceUuid)
async def change_instance_offering(ctx: ApiContext, msg: ChangeInstanceOfferingMsg) -> dict[str, Any]:
    """Change a VM's CPU/memory to another offering's: at once when Stopped, at the next start when Running."""
    vm = await ctx.require("VmInstance", msg.vmInstanceUuid, "vmInstanceUuid", vo="VmInstanceVO")
    off = await ctx.require("InstanceOffering", msg.instanceOfferingUuid, "instanceOfferingUuid")
    sm.check_allowed(vm["uuid"], vm["state"], "ChangeInstanceOffering")
    if off["state"] != "Enabled":
        raise OperationError(f"instance offering[uuid:{off['uuid']}] is {off['state']}, can't change to it; enable "
                             "it first")
    if off["type"] != vm["type"]:
        raise InvalidArgument(f"invalid field[instanceOfferingUuid]: instance offering[uuid:{off['uuid']}] is of "
                              f"type {off['type']}, vm[uuid:{vm['uuid']}] is {vm['type']}")
    tags = ctx.core.services["tags"]
    now = now_iso()
    async with ctx.db.write() as tx:
        cur = await tx.fetchone("SELECT state FROM VmInstance WHERE uuid=?", (vm["uuid"],))
        sm.check_allowed(vm["uuid"], cur["state"], "ChangeInstanceOffering")
        await tags.remove(tx, vm["uuid"], PENDING)
        if cur["state"] == "Stopped":
            await tx.update("VmInstance", {"uuid": vm["uuid"]}, {
                "instanceOfferingUuid": off["uuid"], "cpuNum": off["cpuNum"], "cpuSpeed": off["cpuSpeed"],
                "memorySize": off["memorySize"], "lastOpDate": now})
        else:
            await tx.update("VmInstance", {"uuid": vm["uuid"]}, {"instanceOfferingUuid": off["uuid"],
                                                                   "lastOpDate": now})
            if (off["cpuNum"], off["cpuSpeed"], off["memorySize"]) != (vm["cpuNum"], vm["cpuSpeed"],
                                                                      vm["memorySize"]):
                await tags.write(tx, "VmInstanceVO", vm["uuid"],
                                 _tag(off["cpuNum"], off["cpuSpeed"], off["memorySize"]), system=True,
                                 inherent=True)
    return {"inventory": await ctx.inventory("VmInstance", vm["uuid"])}


async def apply_pending(ctx: ApiContext, vm: dict[str, Any]) -> dict[str, Any]:
    """Apply a pending offering change to a Stopped VM about to start; the (possibly updated) row."""
    found = await ctx.core.services["tags"].values(vm["uuid"], PENDING)
    if not found:
        return vm
    v = found[-1][1]
    values = {"cpuNum": int(v["cpuNum"]), "cpuSpeed": int(v["cpuSpeed"]), "memorySize": int(v["memory"])}
    async with ctx.db.write() as tx:
        await tx.update("VmInstance", {"uuid": vm["uuid"]}, {**values, "lastOpDate": now_iso()})
        await ctx.core.services["tags"].remove(tx, vm["uuid"], PENDING)
    return {**vm, **values}
