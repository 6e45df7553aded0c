"""VM lifecycle APIs: CreateVmInstance, Start/Stop/Reboot/DestroyVmInstance, UpdateVmInstance,
GetVmConsoleAddress. Each runs in the VM's queue (key = VM uuid) and follows 1.0's state machine
(:mod:`.statemachine`): a state that does not allow the API → 409 VM.1010.

Guarantees: the intermediate state (Starting, Stopping, ...) is written before the agent is called; on
agent failure the VM goes back to the state it had (a failed start: Stopped without host, capacity
returned). Capacity moves only through :func:`controller.compute.capacity.move_vm`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, UpdateMessage, Uuid, UuidDeleteMessage, UuidMessage
from controller.api.registry import api, by_uuid
from controller.compute import deletion, extensions, iso, resize
from controller.compute import statemachine as sm
from controller.compute.allocator import Need, allocate_host
from controller.compute.capacity import move_vm, release, vm_cpu
from controller.compute.vmcreate import CreateVmInstanceMsg, create_vm
from controller.compute.vmstart import start_on_host
from controller.errors import ApiError, InvalidArgument, VmStartFailed
from controller.resources import ipam
from controller.storage import shared
from controller.util import new_uuid, now_iso
from kvmagent.contract import vm as vc


class StopVmInstanceMsg(UuidMessage):
    type: Literal["grace", "cold"] = "grace"
    stopTimeout: int = Field(60, ge=0, le=3600, description="seconds of graceful stop before force")


class UpdateVmInstanceMsg(UpdateMessage):
    state: Literal["Stopped", "Running"] | None = None
    defaultL3NetworkUuid: Uuid | None = None
    platform: Literal["Linux", "Windows", "WindowsVirtio", "Other", "Paravirtualization"] | None = None


async def _vm(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    return await ctx.require("VmInstance", uuid, "uuid")


async def _host(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    return await ctx.require("Host", uuid, "hostUuid")


async def _set(ctx: ApiContext, uuid: str, event: str, **values: Any) -> str:
    """Apply ``event`` to the VM's current state (internal error when the table has no such transition)."""
    async with ctx.db.write() as tx:
        row = await tx.fetchone("SELECT state FROM VmInstance WHERE uuid=?", (uuid,))
        state = sm.next_state(row["state"] if row else "Expunging", event)
        await tx.update("VmInstance", {"uuid": uuid}, {"state": state, **values, "lastOpDate": now_iso()})
    return state


async def _inv(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    return {"inventory": await ctx.inventory("VmInstance", uuid)}


@api("CreateVmInstance", CreateVmInstanceMsg, job=True)
async def create_vm_instance(ctx: ApiContext, msg: CreateVmInstanceMsg) -> dict[str, Any]:
    """Create a VM and start it on an allocated host (rolled back entirely on failure)."""
    return await _inv(ctx, await create_vm(ctx, msg))


@api("StartVmInstance", UuidMessage, job=True, queue=by_uuid)
async def start_vm_instance(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """Start a Stopped VM: on its last host when it fits (its root disk lives there), else any host."""
    vm = await _vm(ctx, msg.uuid)
    sm.check_allowed(msg.uuid, vm["state"], "StartVmInstance")
    vm = await resize.apply_pending(ctx, vm)  # ChangeInstanceOffering made while Running (1.0)
    l3s = [r["l3NetworkUuid"] for r in await ctx.db.fetchall(
        "SELECT l3NetworkUuid FROM VmNic WHERE vmInstanceUuid=? AND l3NetworkUuid IS NOT NULL", (msg.uuid,))]
    root = await ctx.db.fetchone("SELECT installPath, primaryStorageUuid FROM Volume WHERE uuid=?",
                                 (vm["rootVolumeUuid"],))
    pinned = vm["lastHostUuid"] if root is not None and root["installPath"] else None
    # on a shared storage the disks are on every host that has it connected: any of them
    on_shared = pinned is not None and await shared.is_shared(ctx.db, root["primaryStorageUuid"])
    need = Need(cpu=vm_cpu(vm), memory=vm["memorySize"], l3_uuids=l3s, host_uuid=None if on_shared else pinned,
                shared_ps_uuid=root["primaryStorageUuid"] if on_shared else None)
    async with ctx.db.write() as tx:
        await deletion.reallocate_ips(tx, ctx.core, msg.uuid)  # a recovered VM gets addresses again
        host = await allocate_host(tx, need)
        await tx.update("VmInstance", {"uuid": msg.uuid}, {
            "state": sm.next_state(vm["state"], "starting"), "hostUuid": host["uuid"], "lastOpDate": now_iso()})
    account = ctx.session.accountUuid if ctx.session else new_uuid()
    try:
        await start_on_host(ctx.core, host, {**vm, "hostUuid": host["uuid"]}, account)
    except ApiError as e:
        async with ctx.db.write() as tx:
            await move_vm(tx, msg.uuid, expect_host=host["uuid"], host=None, state="Stopped")
        raise VmStartFailed(f"failed to start vm[uuid:{msg.uuid}] on host[uuid:{host['uuid']}, managementIp:"
                            f"{host['managementIp']}]: {e.details}", cause=e.body()["error"]) from e
    await _set(ctx, msg.uuid, "running")
    return await _inv(ctx, msg.uuid)


@api("StopVmInstance", StopVmInstanceMsg, job=True, queue=by_uuid)
async def stop_vm_instance(ctx: ApiContext, msg: StopVmInstanceMsg) -> dict[str, Any]:
    """Graceful stop then force (``type=cold``: force at once); the VM ends Stopped without host."""
    vm = await _vm(ctx, msg.uuid)
    sm.check_allowed(msg.uuid, vm["state"], "StopVmInstance")
    if vm["state"] == "Stopped":
        return await _inv(ctx, msg.uuid)
    before = vm["state"]
    await _set(ctx, msg.uuid, "stopping")
    if vm["hostUuid"]:
        host = await _host(ctx, vm["hostUuid"])
        cmd = vc.StopVmCmd(uuid=msg.uuid, timeout=msg.stopTimeout, force=msg.type == "cold")
        try:
            await ctx.core.services["agents"].call(host, cmd, timeout=msg.stopTimeout + 60)
        except ApiError:
            await _set(ctx, msg.uuid, "running" if before == "Running" else "unknown")
            raise
    async with ctx.db.write() as tx:
        await move_vm(tx, msg.uuid, expect_host=vm["hostUuid"], host=None, state="Stopped")
    if vm["hostUuid"]:
        await extensions.run_quietly("vm.stopped", ctx.core, host_uuid=vm["hostUuid"], vm=vm)
    return await _inv(ctx, msg.uuid)


@api("RebootVmInstance", UuidMessage, job=True, queue=by_uuid)
async def reboot_vm_instance(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """Reboot a Running VM on its host."""
    vm = await _vm(ctx, msg.uuid)
    sm.check_allowed(msg.uuid, vm["state"], "RebootVmInstance")
    host = await _host(ctx, vm["hostUuid"])
    await _set(ctx, msg.uuid, "rebooting")
    try:
        boot = [iso.BOOT_DEVICES[d] for d in await iso.boot_order(ctx.core, msg.uuid)]
        await ctx.core.services["agents"].call(host, vc.RebootVmCmd(uuid=msg.uuid, bootDev=boot, timeout=60),
                                               timeout=120)
    finally:
        await _set(ctx, msg.uuid, "running")
    return await _inv(ctx, msg.uuid)


@api("DestroyVmInstance", UuidDeleteMessage, job=True, queue=by_uuid)
async def destroy_vm_instance(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Destroy: power off on the host, return capacity and IPs, detach the data volumes (the storage hook on
    ``vm.destroyed`` deletes them when ``vm/dataVolume.deleteOnVmDestroy``); then per ``vm/deletionPolicy``:
    Direct removes the VM at once, Delay/Never leave it Destroyed (recoverable); an appliance VM (virtual router)
    is always removed at once. An unknown uuid is a success."""
    row = await ctx.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (msg.uuid,))
    if row is None or row["state"] == "Destroyed":
        return {}
    vm = dict(row)
    sm.check_allowed(msg.uuid, vm["state"], "DestroyVmInstance")
    before = vm["state"]
    await _set(ctx, msg.uuid, "destroying")
    # a VM stopped out of band keeps its definition on its last host: remove it there too
    target = vm["hostUuid"] or vm["lastHostUuid"]
    host_row = await ctx.db.fetchone("SELECT * FROM Host WHERE uuid=?", (target,)) if target else None
    if host_row is not None and (vm["hostUuid"] or host_row["status"] == "Connected"):
        host = dict(host_row)
        try:
            await ctx.core.services["agents"].call(host, vc.DestroyVmCmd(uuid=msg.uuid))
        except ApiError:
            async with ctx.db.write() as tx:
                await tx.update("VmInstance", {"uuid": msg.uuid}, {"state": before, "lastOpDate": now_iso()})
            raise
    if host_row is not None:
        await extensions.run_quietly("vm.stopped", ctx.core, host_uuid=host_row["uuid"], vm=vm)
    await _release_all(ctx, vm)
    await extensions.run_quietly("vm.destroyed", ctx.core, vm=vm)
    # an appliance VM (virtual router) is always removed at once, whatever the policy (1.0: stateless, no
    # Destroyed state, no recover)
    if deletion.policy(ctx.core) == "Direct" or vm["type"] == "ApplianceVm":
        row = await ctx.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (msg.uuid,))
        if row is not None:
            await deletion.expunge(ctx.core, dict(row))
    return {}


async def _release_all(ctx: ApiContext, vm: dict[str, Any]) -> None:
    async with ctx.db.write() as tx:
        if vm["hostUuid"]:
            await release(tx, vm["hostUuid"], vm_cpu(vm), vm["memorySize"])
        for nic in await tx.fetchall("SELECT uuid, usedIpUuid FROM VmNic WHERE vmInstanceUuid=?", (vm["uuid"],)):
            if nic["usedIpUuid"]:
                await ipam.release(tx, nic["usedIpUuid"])
            await tx.update("VmNic", {"uuid": nic["uuid"]},
                            {"ip": None, "netmask": None, "gateway": None, "usedIpUuid": None})
        await tx.execute("UPDATE Volume SET status='Deleted', lastOpDate=? WHERE uuid=?",
                         (now_iso(), vm["rootVolumeUuid"]))
        last = vm["hostUuid"] or vm["lastHostUuid"]
        await tx.update("VmInstance", {"uuid": vm["uuid"]}, {
            "state": "Destroyed", "hostUuid": None, "lastHostUuid": last, "lastOpDate": now_iso()})


@api("UpdateVmInstance", UpdateVmInstanceMsg, queue=by_uuid)
async def update_vm_instance(ctx: ApiContext, msg: UpdateVmInstanceMsg) -> dict[str, Any]:
    """Write name, description, state (Stopped/Running), defaultL3NetworkUuid, platform directly (1.0)."""
    await _vm(ctx, msg.uuid)
    if msg.defaultL3NetworkUuid:
        nic = await ctx.db.fetchone("SELECT 1 FROM VmNic WHERE vmInstanceUuid=? AND l3NetworkUuid=?",
                                    (msg.uuid, msg.defaultL3NetworkUuid))
        if nic is None:
            raise InvalidArgument(f"invalid field[defaultL3NetworkUuid]: vm[uuid:{msg.uuid}] has no NIC on L3 "
                                  f"network {msg.defaultL3NetworkUuid}")
    values = {k: getattr(msg, k) for k in ("name", "description", "state", "defaultL3NetworkUuid", "platform")
              if getattr(msg, k) is not None}
    if values:
        async with ctx.db.write() as tx:
            await tx.update("VmInstance", {"uuid": msg.uuid}, {**values, "lastOpDate": now_iso()})
    return await _inv(ctx, msg.uuid)


class GetVmConsoleAddressMsg(ApiMessage):
    uuid: Uuid


@api("GetVmConsoleAddress", GetVmConsoleAddressMsg, queue=by_uuid)
async def get_vm_console_address(ctx: ApiContext, msg: GetVmConsoleAddressMsg) -> dict[str, Any]:
    """hostIp, port, protocol and password of a Running VM's console (VNC or SPICE, as it was started; the
    password is new at every start, and only a valid session gets it)."""
    vm = await _vm(ctx, msg.uuid)
    sm.check_allowed(msg.uuid, vm["state"], "GetVmConsoleAddress")
    host = await _host(ctx, vm["hostUuid"])
    reply = await ctx.core.services["agents"].call(host, vc.GetConsoleCmd(uuid=msg.uuid))
    # The protocol the VM actually runs with (1.0 answered the current config, which may have changed since).
    out: dict[str, Any] = {"hostIp": host["managementIp"], "port": reply.port, "protocol": reply.protocol}
    if reply.password:
        out["password"] = reply.password
    return out
