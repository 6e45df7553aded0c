"""CreateVmInstance (reference §2 "CreateVmInstance", DESIGN.md "Allocators").

Guarantees:

* Checks first (nothing is written when they fail): offering, image, L3s, zone/cluster/host exist and are
  Enabled, the image is not a DataVolumeTemplate (an ISO needs ``rootDiskOfferingUuid``) and has a copy a
  host can fetch (a Ready copy on a backup storage; 409 otherwise), system images and system L3s are refused
  for user VMs, ``defaultL3NetworkUuid`` is required with more than one L3 and
  must be one of them, system tags are valid.
* ONE transaction: internalId, host allocation with its capacity reservation, VM row (state Starting; the
  1.0 Created→Starting step happens inside the transaction), NICs with unique MACs
  ``fa:xx:xx:xx:xx:<deviceId hex>`` and IPs (``staticIp::`` honoured), root volume row, tags.
* ``dataDiskOfferingUuids``: one NotInstantiated data volume each, attached, created on the host at start.
* Then the VM is started on the host. Any failure rolls everything back: the domain is destroyed, the root
  volume deleted on the host, capacity and IPs returned and the rows deleted; the API fails.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from typing import Any, Literal

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name, Uuid
from controller.backup.cache import cache_source
from controller.compute.allocator import Need, allocate_host
from controller.compute.vmstart import delete_root, start_on_host
from controller.db.database import Tx
from controller.errors import ApiError, InvalidArgument, OperationError, VmStartFailed
from controller.resources import ipam
from controller.storage import capacity as storage_capacity
from controller.util import new_uuid, now_iso
from kvmagent.contract import vm as vc
from kvmagent.contract.names import nic_tap_name

log = logging.getLogger(__name__)


class CreateVmInstanceMsg(CreateMessage):
    name: Name
    description: Description | None = None
    instanceOfferingUuid: Uuid
    imageUuid: Uuid
    l3NetworkUuids: list[Uuid] = Field(min_length=1)
    type: Literal["UserVm", "ApplianceVm"] = "UserVm"
    rootDiskOfferingUuid: Uuid | None = None
    dataDiskOfferingUuids: list[Uuid] | None = None
    zoneUuid: Uuid | None = None
    clusterUuid: Uuid | None = None
    hostUuid: Uuid | None = None
    defaultL3NetworkUuid: Uuid | None = None


def _enabled(row: dict[str, Any], field: str, what: str) -> None:
    if row.get("state", "Enabled") != "Enabled":
        raise OperationError(f"{what}[uuid:{row['uuid']}] ({field}) is {row['state']}; enable it first")


async def check(ctx: ApiContext, msg: CreateVmInstanceMsg) -> tuple[dict[str, Any], dict[str, Any]]:
    """The offering and image rows, after every creation rule passed."""
    offering = await ctx.require("InstanceOffering", msg.instanceOfferingUuid, "instanceOfferingUuid")
    image = await ctx.require("Image", msg.imageUuid, "imageUuid")
    _enabled(offering, "instanceOfferingUuid", "instance offering")
    _enabled(image, "imageUuid", "image")
    await _check_image(ctx, msg, image)
    await cache_source(ctx.core, image)  # 409 now, not a failed start later, when no host could fetch it
    if msg.type == "UserVm" and image["system"]:
        raise InvalidArgument(f"image[uuid:{image['uuid']}] is a system image; user VMs cannot use it")
    for l3_uuid in msg.l3NetworkUuids:
        l3 = await ctx.require("L3Network", l3_uuid, "l3NetworkUuids")
        _enabled(l3, "l3NetworkUuids", "L3 network")
        if msg.type == "UserVm" and l3["system"]:
            raise InvalidArgument(f"L3 network[uuid:{l3_uuid}] is a system network; user VMs cannot use it")
    if len(set(msg.l3NetworkUuids)) != len(msg.l3NetworkUuids):
        raise InvalidArgument(f"invalid field[l3NetworkUuids]: {msg.l3NetworkUuids} lists an L3 network twice")
    if len(msg.l3NetworkUuids) > 1 and msg.defaultL3NetworkUuid is None:
        raise InvalidArgument("invalid field[defaultL3NetworkUuid]: it is mandatory when l3NetworkUuids has "
                              "more than one L3 network")
    if msg.defaultL3NetworkUuid and msg.defaultL3NetworkUuid not in msg.l3NetworkUuids:
        raise InvalidArgument(f"invalid field[defaultL3NetworkUuid]: {msg.defaultL3NetworkUuid} is not in "
                              f"l3NetworkUuids {msg.l3NetworkUuids}")
    for table, value, field in (("Zone", msg.zoneUuid, "zoneUuid"), ("Cluster", msg.clusterUuid, "clusterUuid"),
                                ("Host", msg.hostUuid, "hostUuid")):
        if value:
            row = await ctx.require(table, value, field)
            _enabled(row, field, table.lower())
            if table == "Host" and row["status"] != "Connected":
                raise OperationError(f"host[uuid:{value}] (hostUuid) is {row['status']}, not Connected")
    await _check_disks(ctx, msg)
    await ctx.core.services["tags"].validate_create_tags("VmInstanceVO", msg.systemTags)
    return offering, image


async def _check_image(ctx: ApiContext, msg: CreateVmInstanceMsg, image: dict[str, Any]) -> None:
    """A RootVolumeTemplate, or an ISO together with a root disk offering (1.0's rules)."""
    if image["mediaType"] == "DataVolumeTemplate":
        raise InvalidArgument(f"image[uuid:{image['uuid']}] is a DataVolumeTemplate; a VM needs a "
                              "RootVolumeTemplate image")
    if image["mediaType"] == "ISO":
        if not msg.rootDiskOfferingUuid:
            raise InvalidArgument(f"invalid field[rootDiskOfferingUuid]: it is mandatory when the image[uuid:"
                                  f"{image['uuid']}] is an ISO (the root disk is created empty from it)")
        disk = await ctx.require("DiskOffering", msg.rootDiskOfferingUuid, "rootDiskOfferingUuid")
        _enabled(disk, "rootDiskOfferingUuid", "disk offering")


async def _check_disks(ctx: ApiContext, msg: CreateVmInstanceMsg) -> None:
    for disk in msg.dataDiskOfferingUuids or ():
        _enabled(await ctx.require("DiskOffering", disk, "dataDiskOfferingUuids"), "dataDiskOfferingUuids",
                 "disk offering")


def static_ips(tags: list[str] | None) -> dict[str, str]:
    out = {}
    for t in tags or ():
        parts = t.split("::")
        if len(parts) == 3 and parts[0] == "staticIp":
            out[parts[1]] = parts[2]
    return out


async def _nic(tx: Tx, vm_uuid: str, internal_id: int, device_id: int, l3: str, static: str | None) -> None:
    used = await (ipam.allocate_ip(tx, l3, static, used_for="VmNic") if static
                  else ipam.allocate(tx, l3, used_for="VmNic"))
    now = now_iso()
    for _ in range(8):
        mac = "fa:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4)) + f":{device_id:02x}"
        try:
            await tx.insert("VmNic", {
                "uuid": new_uuid(), "vmInstanceUuid": vm_uuid, "usedIpUuid": used["uuid"], "l3NetworkUuid": l3,
                "ip": used["ip"], "mac": mac, "netmask": used["netmask"], "gateway": used["gateway"],
                "internalName": nic_tap_name(internal_id, device_id), "deviceId": device_id,
                "createDate": now, "lastOpDate": now})
            return
        except sqlite3.IntegrityError:
            continue
    raise OperationError("could not generate a unique MAC address after 8 attempts")


async def _data_volumes(tx: Tx, msg: CreateVmInstanceMsg, vm_uuid: str, now: str) -> None:
    """One NotInstantiated data volume per ``dataDiskOfferingUuids`` entry, attached as device 1, 2, ...;
    created on the VM's host at its first start."""
    for device_id, disk in enumerate(msg.dataDiskOfferingUuids or (), start=1):
        offering = await tx.fetchone("SELECT * FROM DiskOffering WHERE uuid=?", (disk,))
        if offering is None:
            raise InvalidArgument(f"invalid field[dataDiskOfferingUuids]: disk offering[uuid:{disk}] not found")
        await tx.insert("Volume", {
            "uuid": new_uuid(), "name": f"DATA-for-{msg.name}", "vmInstanceUuid": vm_uuid, "diskOfferingUuid": disk,
            "type": "Data", "format": "qcow2", "size": offering["diskSize"], "deviceId": device_id,
            "status": "NotInstantiated", "createDate": now, "lastOpDate": now})


async def insert_vm(ctx: ApiContext, msg: CreateVmInstanceMsg, offering: dict[str, Any],
                    image: dict[str, Any]) -> dict[str, Any]:
    """Everything of the new VM in one transaction; returns the VM row."""
    uuid = msg.resourceUuid or new_uuid()
    need = Need(cpu=offering["cpuNum"] * offering["cpuSpeed"], memory=offering["memorySize"],
                l3_uuids=msg.l3NetworkUuids, zone_uuid=msg.zoneUuid, cluster_uuid=msg.clusterUuid,
                host_uuid=msg.hostUuid)
    now = now_iso()
    root_uuid = new_uuid()
    statics = static_ips(msg.systemTags)
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM VmInstance WHERE uuid=?", (uuid,)):
            raise InvalidArgument(f"invalid field[resourceUuid]: vm[uuid:{uuid}] already exists")
        cur = await tx.execute("INSERT INTO VmInternalId (vmInstanceUuid) VALUES (?)", (uuid,))
        internal_id = int(cur.lastrowid or 0)
        host = await allocate_host(tx, need)
        vm = {"uuid": uuid, "name": msg.name, "description": msg.description, "zoneUuid": host["zoneUuid"],
              "clusterUuid": host["clusterUuid"], "imageUuid": image["uuid"], "hostUuid": host["uuid"],
              "instanceOfferingUuid": offering["uuid"], "rootVolumeUuid": root_uuid, "platform": image["platform"],
              "defaultL3NetworkUuid": msg.defaultL3NetworkUuid or msg.l3NetworkUuids[0], "type": msg.type,
              "hypervisorType": "KVM", "memorySize": offering["memorySize"], "cpuNum": offering["cpuNum"],
              "cpuSpeed": offering["cpuSpeed"], "allocatorStrategy": offering["allocatorStrategy"],
              "state": "Starting", "internalId": internal_id, "createDate": now, "lastOpDate": now}
        await tx.insert("VmInstance", vm)
        for device_id, l3 in enumerate(msg.l3NetworkUuids):
            await _nic(tx, uuid, internal_id, device_id, l3, statics.get(l3))
        from_iso = image["mediaType"] == "ISO"
        root_size = image["size"]
        if from_iso:  # an empty root disk of the root disk offering's size; the ISO stays attached
            disk = await tx.fetchone("SELECT diskSize FROM DiskOffering WHERE uuid=?", (msg.rootDiskOfferingUuid,))
            root_size = disk["diskSize"] if disk else 0
        await tx.insert("Volume", {
            "uuid": root_uuid, "name": f"ROOT-for-{msg.name}", "vmInstanceUuid": uuid, "rootImageUuid": image["uuid"],
            "diskOfferingUuid": msg.rootDiskOfferingUuid if from_iso else None,
            "type": "Root", "format": "qcow2", "size": root_size, "deviceId": 0, "status": "NotInstantiated",
            "createDate": now, "lastOpDate": now})
        await _data_volumes(tx, msg, uuid, now)
        await ctx.core.services["tags"].write_create_tags(tx, "VmInstanceVO", uuid, msg.systemTags, msg.userTags)
        if from_iso:
            await ctx.core.services["tags"].write(tx, "VmInstanceVO", uuid, f"iso::{image['uuid']}", system=True,
                                                  inherent=True)
    return vm


async def remove_vm(ctx: ApiContext, vm_uuid: str) -> None:
    """Delete the VM's rows, returning its capacity and IPs (one transaction)."""
    async with ctx.db.write() as tx:
        vm = await tx.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (vm_uuid,))
        if vm is None:
            return
        if vm["hostUuid"]:
            from controller.compute.capacity import release, vm_cpu

            await release(tx, vm["hostUuid"], vm_cpu(dict(vm)), vm["memorySize"])
        for nic in await tx.fetchall("SELECT usedIpUuid FROM VmNic WHERE vmInstanceUuid=?", (vm_uuid,)):
            if nic["usedIpUuid"]:
                await ipam.release(tx, nic["usedIpUuid"])
        for vol in await tx.fetchall("SELECT uuid FROM Volume WHERE vmInstanceUuid=?", (vm_uuid,)):
            await storage_capacity.remove_resource(tx, vol["uuid"])
        await tx.execute("DELETE FROM Volume WHERE vmInstanceUuid=?", (vm_uuid,))
        await tx.execute("DELETE FROM VmInstance WHERE uuid=?", (vm_uuid,))


async def rollback_on_host(ctx: ApiContext, host: dict[str, Any], vm: dict[str, Any]) -> bool:
    """Nothing of the VM stays on the host (domain, root volume). False when the host could not confirm that
    the domain is gone (its agent did not answer): the caller keeps the VM's records (and so its IPs)."""
    agents = ctx.core.services["agents"]
    try:
        await agents.call(host, vc.DestroyVmCmd(uuid=vm["uuid"]))
    except ApiError as e:
        log.warning("rollback of vm %s on host %s: the domain may still exist: %s", vm["uuid"], host["uuid"],
                    e.details)
        return False
    try:
        for vol in await ctx.db.fetchall("SELECT installPath FROM Volume WHERE vmInstanceUuid=? AND "
                                         "installPath IS NOT NULL", (vm["uuid"],)):
            await delete_root(ctx.core, host, vol["installPath"])
    except ApiError as e:
        log.warning("rollback of vm %s on host %s left a volume behind: %s", vm["uuid"], host["uuid"], e.details)
    return True


async def create_vm(ctx: ApiContext, msg: CreateVmInstanceMsg) -> str:
    """Create and start; returns the VM uuid. The VM's work queue is held from its insertion on, so crash
    recovery (:mod:`.recovery`) knows its Starting state belongs to a live operation."""
    offering, image = await check(ctx, msg)
    if not msg.resourceUuid:
        msg.resourceUuid = new_uuid()
    return await ctx.core.queues.run(msg.resourceUuid, lambda: _create(ctx, msg, offering, image))


async def _create(ctx: ApiContext, msg: CreateVmInstanceMsg, offering: dict[str, Any], image: dict[str, Any]) -> str:
    vm = await insert_vm(ctx, msg, offering, image)
    host = dict(await ctx.db.fetchone("SELECT * FROM Host WHERE uuid=?", (vm["hostUuid"],)) or {})
    account = ctx.session.accountUuid if ctx.session else new_uuid()
    try:
        await start_on_host(ctx.core, host, vm, account, new_create=True)
    except BaseException as e:
        kept = ""
        if await rollback_on_host(ctx, host, vm):
            await remove_vm(ctx, vm["uuid"])
        else:  # a domain may run there with the VM's IPs: keep them held until the host says (crash recovery)
            async with ctx.db.write() as tx:
                await tx.execute("UPDATE VmInstance SET state='Destroying', lastOpDate=? WHERE uuid=?",
                                 (now_iso(), vm["uuid"]))
            kept = ("; the host did not confirm the rollback, so the VM is kept Destroying (holding its IPs) "
                    "and destroyed when its host reconnects")
        if isinstance(e, ApiError):
            raise VmStartFailed(f"failed to start vm[uuid:{vm['uuid']}, name:{vm['name']}] on host"
                                f"[uuid:{host['uuid']}, managementIp:{host['managementIp']}]: {e.details}{kept}",
                                cause=e.body()["error"]) from e
        raise
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE VmInstance SET state='Running', lastOpDate=? WHERE uuid=? AND state='Starting'",
                         (now_iso(), vm["uuid"]))
    return str(vm["uuid"])
