"""NICs after creation (1.0): ``AttachL3NetworkToVm``, ``DetachL3NetworkFromVm``, ``GetVmAttachableL3Network``.

Rules (1.0's VmInstanceApiInterceptor and VmInstanceBase):

* The VM must be Running or Stopped (409 VM.1010). The L3 must be Enabled, not a system network, in the VM's
  zone, on an L2 attached to the VM's cluster, and not already on the VM (400 SYS.1007 with 1.0's texts).
  ``GetVmAttachableL3Network`` lists exactly the L3s that pass these checks (one SQL query).
* Attach: an IP is allocated on the L3 and the NIC row written (MAC, ``vnic<internalId>.<deviceId>``) in one
  transaction. Stopped VM: that is all (the next start plugs it). Running VM: the flat provider's
  ``vm.nic_attached`` hook serves the NIC's DHCP entry on the host first (so the guest's first request is
  answered), then ``/vm/nic/attach`` hot-plugs it; any failure removes the DHCP entry again, releases the IP and
  deletes the row. A VM without a default L3 gets this one.
* Detach (``vmNicUuid``): Running VM: ``/vm/nic/detach`` returns once the guest released the device
  (libvirt's device-removed event; a guest that does not is a 409 and the NIC stays, with its IP). Then the
  IP is released and the row deleted in one transaction; the default L3 moves to the VM's first remaining NIC
  (or none); the ``vm.nic_detached`` hook drops the DHCP entry and re-applies the user data on the host.
"""

from __future__ import annotations

import logging
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.compute import extensions
from controller.compute import statemachine as sm
from controller.compute.vmcreate import _nic
from controller.compute.vmstart import nic_tos
from controller.errors import InvalidArgument
from controller.query import get_inventories
from controller.resources import ipam
from controller.util import now_iso
from kvmagent.contract import vm as vc

log = logging.getLogger(__name__)


class AttachL3NetworkToVmMsg(ApiMessage):
    vmInstanceUuid: Uuid
    l3NetworkUuid: Uuid


class DetachL3NetworkFromVmMsg(ApiMessage):
    vmNicUuid: Uuid


class GetVmAttachableL3NetworkMsg(ApiMessage):
    vmInstanceUuid: Uuid


_ATTACHABLE = (
    "SELECT l3.uuid FROM L3Network l3 JOIN L2NetworkClusterRef r ON r.l2NetworkUuid = l3.l2NetworkUuid "
    "AND r.clusterUuid = ? WHERE l3.state = 'Enabled' AND l3.system = 0 AND l3.zoneUuid = ? AND NOT EXISTS "
    "(SELECT 1 FROM VmNic n WHERE n.vmInstanceUuid = ? AND n.l3NetworkUuid = l3.uuid)")


async def _check_attach(ctx: ApiContext, vm: dict[str, Any], l3: dict[str, Any]) -> None:
    sm.check_allowed(vm["uuid"], vm["state"], "AttachL3NetworkToVm")
    if l3["state"] != "Enabled":
        raise InvalidArgument(f"unable to attach a L3 network. The L3 network[uuid:{l3['uuid']}] is disabled")
    if l3["system"]:
        raise InvalidArgument(f"unable to attach a L3 network. The L3 network[uuid:{l3['uuid']}] is a system "
                              "network and vm is a user vm")
    if await ctx.db.fetchone("SELECT 1 FROM VmNic WHERE vmInstanceUuid=? AND l3NetworkUuid=?",
                             (vm["uuid"], l3["uuid"])):
        raise InvalidArgument(f"unable to attach a L3 network. The L3 network[uuid:{l3['uuid']}] is already "
                              f"attached to the vm[uuid: {vm['uuid']}]")
    if l3["zoneUuid"] != vm["zoneUuid"] or not await ctx.db.fetchone(
            "SELECT 1 FROM L2NetworkClusterRef WHERE l2NetworkUuid=? AND clusterUuid=?",
            (l3["l2NetworkUuid"], vm["clusterUuid"])):
        raise InvalidArgument(f"unable to attach a L3 network. The L3 network[uuid:{l3['uuid']}]'s L2 network"
                              f"[uuid:{l3['l2NetworkUuid']}] is not attached to the cluster[uuid:{vm['clusterUuid']}] "
                              f"of the vm[uuid:{vm['uuid']}]")


async def _remove_nic(ctx: ApiContext, nic: dict[str, Any], vm_uuid: str) -> None:
    """One transaction: the IP released, the row deleted, the default L3 moved to a remaining NIC."""
    async with ctx.db.write() as tx:
        if nic["usedIpUuid"]:
            await ipam.release(tx, nic["usedIpUuid"])
        await tx.execute("DELETE FROM VmNic WHERE uuid=?", (nic["uuid"],))
        vm = await tx.fetchone("SELECT defaultL3NetworkUuid FROM VmInstance WHERE uuid=?", (vm_uuid,))
        if vm is not None and vm["defaultL3NetworkUuid"] == nic["l3NetworkUuid"]:
            left = await tx.fetchone("SELECT l3NetworkUuid FROM VmNic WHERE vmInstanceUuid=? ORDER BY deviceId "
                                     "LIMIT 1", (vm_uuid,))
            await tx.update("VmInstance", {"uuid": vm_uuid}, {
                "defaultL3NetworkUuid": left["l3NetworkUuid"] if left else None, "lastOpDate": now_iso()})


@api("AttachL3NetworkToVm", AttachL3NetworkToVmMsg, job=True, queue=lambda m: m.vmInstanceUuid)
async def attach_l3_network_to_vm(ctx: ApiContext, msg: AttachL3NetworkToVmMsg) -> dict[str, Any]:
    """Add a NIC on an L3 network to a VM: IP allocated; hot-plugged (with its flat DHCP entry) when Running."""
    vm = await ctx.require("VmInstance", msg.vmInstanceUuid, "vmInstanceUuid", vo="VmInstanceVO")
    l3 = await ctx.require("L3Network", msg.l3NetworkUuid, "l3NetworkUuid")
    await _check_attach(ctx, vm, l3)
    async with ctx.db.write() as tx:
        cur = await tx.fetchone("SELECT state FROM VmInstance WHERE uuid=?", (vm["uuid"],))
        sm.check_allowed(vm["uuid"], cur["state"], "AttachL3NetworkToVm")
        row = await tx.fetchone("SELECT COALESCE(MAX(deviceId), -1) + 1 FROM VmNic WHERE vmInstanceUuid=?",
                                (vm["uuid"],))
        device_id = int(row[0])
        await _nic(tx, vm["uuid"], int(vm["internalId"]), device_id, l3["uuid"], None)
        if not vm["defaultL3NetworkUuid"]:
            await tx.update("VmInstance", {"uuid": vm["uuid"]}, {"defaultL3NetworkUuid": l3["uuid"]})
            vm["defaultL3NetworkUuid"] = l3["uuid"]
        nic = dict(await tx.fetchone("SELECT * FROM VmNic WHERE vmInstanceUuid=? AND deviceId=?",
                                     (vm["uuid"], device_id)))
    if cur["state"] == "Running" and vm["hostUuid"]:
        host = await ctx.require("Host", vm["hostUuid"], "hostUuid")
        to = next(t for t in await nic_tos(ctx.core, vm["uuid"]) if t.mac == nic["mac"])
        try:
            await extensions.run("vm.nic_attached", ctx.core, host=host, vm=vm, nic=nic)
            await ctx.core.services["agents"].call(host, vc.AttachNicCmd(uuid=vm["uuid"],
                                                                         internalId=int(vm["internalId"]), nic=to))
        except BaseException:
            await _remove_nic(ctx, nic, vm["uuid"])
            await extensions.run_quietly("vm.nic_detached", ctx.core, host=host, vm=vm, nic=nic)
            raise
    return {"inventory": await ctx.inventory("VmInstance", vm["uuid"])}


@api("DetachL3NetworkFromVm", DetachL3NetworkFromVmMsg, job=True)
async def detach_l3_network_from_vm(ctx: ApiContext, msg: DetachL3NetworkFromVmMsg) -> dict[str, Any]:
    """Remove a VM NIC (unplugged when Running, after the guest released it) and release its IP."""
    nic = await ctx.require("VmNic", msg.vmNicUuid, "vmNicUuid", vo="VmNicVO")
    # in the VM's work queue (the key its other APIs use), so no start/stop/attach runs meanwhile
    return await ctx.core.queues.run(nic["vmInstanceUuid"], lambda: _detach(ctx, msg.vmNicUuid))


async def _detach(ctx: ApiContext, nic_uuid: str) -> dict[str, Any]:
    nic = await ctx.require("VmNic", nic_uuid, "vmNicUuid", vo="VmNicVO")
    vm = await ctx.require("VmInstance", nic["vmInstanceUuid"], "vmNicUuid", vo="VmInstanceVO")
    sm.check_allowed(vm["uuid"], vm["state"], "DetachL3NetworkFromVm")
    host = None
    if vm["state"] == "Running" and vm["hostUuid"]:
        host = await ctx.require("Host", vm["hostUuid"], "hostUuid")
        await ctx.core.services["agents"].call(host, vc.DetachNicCmd(uuid=vm["uuid"], mac=nic["mac"]), timeout=90)
    await _remove_nic(ctx, nic, vm["uuid"])
    if host is not None:
        fresh = dict(await ctx.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (vm["uuid"],)))
        await extensions.run_quietly("vm.nic_detached", ctx.core, host=host, vm=fresh, nic=nic)
    return {"inventory": await ctx.inventory("VmInstance", vm["uuid"])}


@api("GetVmAttachableL3Network", GetVmAttachableL3NetworkMsg)
async def get_vm_attachable_l3_network(ctx: ApiContext, msg: GetVmAttachableL3NetworkMsg) -> dict[str, Any]:
    """The L3 networks AttachL3NetworkToVm would accept for this VM."""
    vm = await ctx.require("VmInstance", msg.vmInstanceUuid, "vmInstanceUuid", vo="VmInstanceVO")
    if vm["state"] not in sm.ALLOWED["AttachL3NetworkToVm"]:
        return {"inventories": []}
    rows = await ctx.db.fetchall(_ATTACHABLE + " ORDER BY l3.createDate, l3.uuid",
                                 (vm["clusterUuid"] or "", vm["zoneUuid"] or "", vm["uuid"]))
    async with ctx.db.read() as conn:
        invs = await get_inventories(conn, "L3Network", [r["uuid"] for r in rows])
    return {"inventories": invs}

