"""Starting a VM on its host: root disk on the host's storage, then ``/vm/start`` with the full spec.

Root disk: on the local primary storage attached to the VM's cluster when there is one; otherwise in
``/var/lib/zstack-py/volumes`` on the host (initialised as a local storage named by the host uuid). In
both cases through the agent's storage endpoints: the image is cached from its ``file://`` url, then the
root volume is created from the cache (a qcow2 overlay). Both are idempotent, so a retried start is safe.
On a shared PS (NFS, SharedMountPoint) when the cluster has no local one, the same layout under its mount path,
with the storage's one capacity (controller/storage/shared.py). On a local PS the volume gets its
LocalStorageResourceRef and capacity; a VM whose root or data volume lives
on host X starts only on X; attached data volumes are created at first start and passed to ``/vm/start``.
"""

from __future__ import annotations

import contextlib
import secrets
import string
from typing import Any

from controller.backup.cache import cache_source
from controller.compute import extensions
from controller.compute.connect import l2_bridge, storage_for
from controller.compute.iso import boot_spec
from controller.core import Controller
from controller.errors import OperationError
from controller.storage import capacity, shared
from controller.util import now_iso
from kvmagent.contract import storage as sc
from kvmagent.contract import vm as vc

_PASSWORD_CHARS = string.ascii_letters + string.digits

async def prepare_root(core: Controller, host: dict[str, Any], vm: dict[str, Any], volume: dict[str, Any],
                       account_uuid: str) -> str:
    """Create the root volume on the host (if it has no installPath yet); returns its path."""
    if volume["installPath"]:
        ref = await core.db.fetchone("SELECT hostUuid FROM LocalStorageResourceRef WHERE resourceUuid=?",
                                     (volume["uuid"],))
        if ref is not None and ref["hostUuid"] != host["uuid"]:
            raise OperationError(f"the root volume[uuid:{volume['uuid']}] of vm[uuid:{vm['uuid']}] is on host"
                                 f"[uuid:{ref['hostUuid']}], the vm cannot start on host[uuid:{host['uuid']}]")
        return str(volume["installPath"])
    agents = core.services["agents"]
    path, ps_uuid = await storage_for(core, host)
    if ps_uuid is None:
        await agents.call(host, sc.InitCmd(storagePath=path, primaryStorageUuid=host["uuid"], hostUuid=host["uuid"]))
    image = await core.db.fetchone("SELECT * FROM Image WHERE uuid=?", (vm["imageUuid"],))
    if image is None:
        raise LookupError(f"image[uuid:{vm['imageUuid']}] of vm[uuid:{vm['uuid']}] no longer exists")
    reply: sc.VolumeReply
    if image["mediaType"] == "ISO":  # installed from the ISO onto an empty disk
        reply = await agents.call(host, sc.CreateEmptyVolumeCmd(
            storagePath=path, accountUuid=account_uuid, volumeUuid=volume["uuid"], volumeType="Root",
            size=int(volume["size"])), timeout=600)
    else:
        src = await cache_source(core, dict(image), zone_uuid=host["zoneUuid"])
        # a shared storage's cache is one directory for every host: one download of an image at a time
        one = shared.lock(f"cache-{ps_uuid}-{image['uuid']}") if await shared.is_shared(core.db, ps_uuid) \
            else contextlib.nullcontext()
        async with one:
            await agents.call(host, sc.DownloadImageCmd(storagePath=path, imageUuid=image["uuid"],
                                                        format=image["format"], **src), timeout=1800)
        reply = await agents.call(host, sc.CreateVolumeFromCacheCmd(
            storagePath=path, accountUuid=account_uuid, volumeUuid=volume["uuid"], volumeType="Root",
            imageUuid=image["uuid"]), timeout=600)
    async with core.db.write() as tx:
        await tx.update("Volume", {"uuid": volume["uuid"]}, {
            "installPath": reply.installPath, "size": reply.size, "actualSize": reply.actualSize,
            "status": "Ready", "primaryStorageUuid": ps_uuid, "lastOpDate": now_iso()})
        if ps_uuid is not None:  # the bits exist: reality wins over accounting (force)
            await capacity.add_resource(tx, ps_uuid, host["uuid"], volume["uuid"], "VolumeVO", int(reply.size),
                                        force=True)
    return str(reply.installPath)


async def data_volumes(core: Controller, host: dict[str, Any], vm: dict[str, Any],
                       account_uuid: str) -> list[vc.VolumeTO]:
    """The VM's data volumes, instantiated on ``host`` when new (from ``dataDiskOfferingUuids``); a Ready
    volume on another host refuses the start."""
    from controller.storage import volumes

    rows = await core.db.fetchall("SELECT * FROM Volume WHERE vmInstanceUuid=? AND type='Data' ORDER BY deviceId",
                                  (vm["uuid"],))
    out = []
    for row in rows:
        vol = dict(row)
        ref = await core.db.fetchone("SELECT hostUuid FROM LocalStorageResourceRef WHERE resourceUuid=?",
                                     (vol["uuid"],))
        if vol["status"] == "NotInstantiated":
            path, ps_uuid = await storage_for(core, host)
            if ps_uuid is None:
                raise OperationError(f"data volume[uuid:{vol['uuid']}] needs a local primary storage attached "
                                     f"to cluster[uuid:{host['clusterUuid']}]")
            vol = await volumes.instantiate(core, vol, host, {"uuid": ps_uuid, "url": path}, account_uuid)
        elif ref is not None and ref["hostUuid"] != host["uuid"]:
            raise OperationError(f"data volume[uuid:{vol['uuid']}] of vm[uuid:{vm['uuid']}] is on host"
                                 f"[uuid:{ref['hostUuid']}], the vm cannot start on host[uuid:{host['uuid']}]")
        elif vol["status"] != "Ready":
            continue
        out.append(volumes.volume_to(vol, core))
    return out


async def delete_root(core: Controller, host: dict[str, Any], install_path: str) -> None:
    ps = await core.db.fetchone("SELECT p.* FROM Volume v JOIN PrimaryStorage p ON p.uuid = v.primaryStorageUuid "
                                "WHERE v.installPath=?", (install_path,))
    if ps is not None and shared.is_shared_type(ps["type"]):  # wherever the cluster's local storage is
        path = shared.storage_path(dict(ps))
    else:
        path, _ = await storage_for(core, host)
    await core.services["agents"].call(host, sc.DeleteVolumeCmd(storagePath=path, installPath=install_path))


async def nic_tos(core: Controller, vm_uuid: str) -> list[vc.NicTO]:
    rows = await core.db.fetchall(
        "SELECT n.mac, n.deviceId, n.l3NetworkUuid, n.ip, l2.physicalInterface, l2.vlan, "
        "(SELECT tag FROM SystemTag WHERE resourceUuid = l2.uuid AND tag LIKE 'kvm::bridge::%' LIMIT 1) AS tag "
        "FROM VmNic n JOIN L3Network l3 ON l3.uuid = n.l3NetworkUuid JOIN L2Network l2 ON l2.uuid = l3.l2NetworkUuid "
        "WHERE n.vmInstanceUuid = ? ORDER BY n.deviceId", (vm_uuid,))
    return [vc.NicTO(mac=r["mac"], bridgeName=l2_bridge(dict(r)), deviceId=r["deviceId"],
                     l3NetworkUuid=r["l3NetworkUuid"], ip=r["ip"]) for r in rows]


async def start_cmd(core: Controller, host: dict[str, Any], vm: dict[str, Any], root_path: str,
                    root: dict[str, Any], *, new_create: bool = False) -> vc.StartVmCmd:
    configs = core.services["configs"]
    boot = await boot_spec(core, host, vm, new_create=new_create)
    return vc.StartVmCmd(
        uuid=vm["uuid"], internalId=vm["internalId"], name=vm["name"], cpuNum=vm["cpuNum"],
        cpuSpeed=vm["cpuSpeed"], memory=vm["memorySize"],
        rootVolume=vc.VolumeTO(path=root_path, format="qcow2", uuid=root["uuid"], deviceId=0,
                               cacheMode=configs.get("kvm", "vm.cacheMode")),
        nics=await nic_tos(core, vm["uuid"]), consoleMode=configs.get("kvm", "vm.consoleMode"),
        consolePassword=console_password(),
        cpuMode=configs.get("kvm", "vm.cpuMode"), platform=vm["platform"] or "Linux",
        hostManagementIp=host["managementIp"], bootDev=boot["bootDev"], bootIso=boot["bootIso"],
        firstBootFromCd=boot["firstBootFromCd"], timeout=300, applianceChannel=vm.get("type") == "ApplianceVm")


def console_password() -> str:
    """A new random console password for each start (8 characters: VNC reads no more)."""
    return "".join(secrets.choice(_PASSWORD_CHARS) for _ in range(8))


async def start_on_host(core: Controller, host: dict[str, Any], vm: dict[str, Any], account_uuid: str, *,
                        new_create: bool = False) -> None:
    """Root disk + ``/vm/start``; raises on failure (the caller rolls back). ``new_create``: the start inside
    CreateVmInstance (a VM created from an ISO then boots from the CD-ROM once)."""
    root_row = await core.db.fetchone("SELECT * FROM Volume WHERE uuid=?", (vm["rootVolumeUuid"],))
    if root_row is None:
        raise LookupError(f"root volume of vm[uuid:{vm['uuid']}] is missing")
    root = dict(root_row)
    path = await prepare_root(core, host, vm, root, account_uuid)
    cmd = await start_cmd(core, host, vm, path, root, new_create=new_create)
    cmd.dataVolumes = await data_volumes(core, host, vm, account_uuid)
    await extensions.run("vm.before_start", core, host=host, vm=vm)
    try:
        await core.services["agents"].call(host, cmd, timeout=cmd.timeout + 30)
    except BaseException:
        await extensions.run_quietly("vm.start_failed", core, host=host, vm=vm)
        raise
