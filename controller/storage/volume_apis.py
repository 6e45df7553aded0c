"""Day-2 volume and snapshot APIs of 1.0: ``UpdateVolume``, ``ChangeVolumeState``, ``UpdateVolumeSnapshot``,
``GetVolumeSnapshotTree`` / ``QueryVolumeSnapshotTree`` (nested leaves), ``GetVmAttachableDataVolume`` and
``GetDataVolumeAttachableVm``.

Rules:

* ``ChangeVolumeState`` (``enable``/``disable``) is refused for root volumes (1.0: "it's not allowed to change
  state of root volume"); a Disabled data volume cannot be attached (``AttachDataVolumeToVm`` checks it).
* The attachable lists apply exactly the rules of ``AttachDataVolumeToVm`` (volumes.py), as one SQL query each:
  a data volume that is Enabled, not attached, and either NotInstantiated (on no primary storage yet or on the
  VM's) or Ready on the local storage of the host that holds the VM's root volume; the VM must be a
  UserVm, Running or Stopped, with its root volume on a Connected host. So whatever they list, attach accepts.
  ``GetVmAttachableDataVolume`` of a VM in another state is VM.1010 (1.0 allows it for Running/Stopped);
  ``GetDataVolumeAttachableVm`` of a volume that cannot be attached at all answers an empty list.
* A snapshot tree inventory (1.0's ``VolumeSnapshotTreeInventory``): ``uuid`` (the tree), ``volumeUuid``,
  ``current`` (the tree holding the volume's latest snapshot), ``tree`` = the root leaf ``{inventory,
  parentUuid, children: [leaf...]}``. Deleting a snapshot with several children (after a revert) can leave a
  tree with several roots; its ``tree`` is then a leaf with ``inventory: null`` whose children are the roots.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.queries import enrich
from controller.api.registry import api, by_uuid
from controller.errors import InvalidArgument, OperationError, vm_state_error
from controller.query import get_inventories
from controller.resources.common import STATE_EVENTS, update_api, update_fields

update_api("Volume", "Change a volume's name or description.")
update_api("VolumeSnapshot", "Change a volume snapshot's name or description.")


class ChangeVolumeStateMsg(ApiMessage):
    uuid: Uuid
    stateEvent: Literal["enable", "disable"]


class GetVolumeSnapshotTreeMsg(ApiMessage):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["volumeUuid"], "properties": {"volumeUuid": {"type": "string"}}},
        {"required": ["treeUuid"], "properties": {"treeUuid": {"type": "string"}}}]})

    volumeUuid: Uuid | None = None
    treeUuid: Uuid | None = None


class GetVmAttachableDataVolumeMsg(ApiMessage):
    vmInstanceUuid: Uuid


class GetDataVolumeAttachableVmMsg(ApiMessage):
    volumeUuid: Uuid


@api("ChangeVolumeState", ChangeVolumeStateMsg, queue=by_uuid)
async def change_volume_state(ctx: ApiContext, msg: ChangeVolumeStateMsg) -> dict[str, Any]:
    """Enable or disable a data volume (a Disabled one cannot be attached)."""
    volume = await ctx.require("Volume", msg.uuid, "uuid")
    if volume["type"] == "Root":
        raise OperationError(f"it's not allowed to change state of root volume, uuid:{msg.uuid}")
    await update_fields(ctx, "Volume", msg.uuid, {"state": STATE_EVENTS[msg.stateEvent]})
    return {"inventory": await ctx.inventory("Volume", msg.uuid)}


async def _inventories(ctx: ApiContext, resource: str, uuids: list[str]) -> list[dict[str, Any]]:
    async with ctx.db.read() as conn:
        return await get_inventories(conn, resource, uuids)


async def _fill_trees(ctx: ApiContext, trees: list[dict[str, Any]]) -> None:
    """Set ``tree`` (the nested leaves) of each tree inventory that carries its ``uuid``."""
    keys = [t["uuid"] for t in trees if t.get("uuid")]
    if not keys:
        return
    marks = ", ".join("?" for _ in keys)
    rows = await ctx.db.fetchall(f"SELECT uuid FROM VolumeSnapshot WHERE treeUuid IN ({marks}) "
                                 "ORDER BY createDate, uuid", tuple(keys))
    snaps = await _inventories(ctx, "VolumeSnapshot", [r["uuid"] for r in rows])
    leaves = {s["uuid"]: {"inventory": s, "parentUuid": s["parentUuid"], "children": []} for s in snaps}
    roots: dict[str, list[dict[str, Any]]] = {}
    for s in snaps:
        leaf, parent = leaves[s["uuid"]], leaves.get(s["parentUuid"] or "")
        if parent is not None:
            parent["children"].append(leaf)
        else:
            roots.setdefault(s["treeUuid"], []).append(leaf)
    for t in trees:
        if "uuid" not in t:
            continue
        found = roots.get(t["uuid"], [])
        t["tree"] = found[0] if len(found) == 1 else {"inventory": None, "parentUuid": None, "children": found}


enrich("VolumeSnapshotTree", _fill_trees)


@api("GetVolumeSnapshotTree", GetVolumeSnapshotTreeMsg)
async def get_volume_snapshot_tree(ctx: ApiContext, msg: GetVolumeSnapshotTreeMsg) -> dict[str, Any]:
    """The snapshot trees of a volume (or one tree by treeUuid) with their nested leaves."""
    if msg.treeUuid:
        rows = await ctx.db.fetchall("SELECT uuid FROM VolumeSnapshotTree WHERE uuid=?", (msg.treeUuid,))
    elif msg.volumeUuid:
        await ctx.require("Volume", msg.volumeUuid, "volumeUuid")
        rows = await ctx.db.fetchall("SELECT uuid FROM VolumeSnapshotTree WHERE volumeUuid=? ORDER BY createDate",
                                     (msg.volumeUuid,))
    else:
        raise InvalidArgument("either volumeUuid or treeUuid must be set")
    trees = await _inventories(ctx, "VolumeSnapshotTree", [r["uuid"] for r in rows])
    await _fill_trees(ctx, trees)
    return {"inventories": trees}


_VM_STATES = ("Running", "Stopped")


@api("GetVmAttachableDataVolume", GetVmAttachableDataVolumeMsg)
async def get_vm_attachable_data_volume(ctx: ApiContext, msg: GetVmAttachableDataVolumeMsg) -> dict[str, Any]:
    """The data volumes AttachDataVolumeToVm would accept for this VM."""
    vm = await ctx.require("VmInstance", msg.vmInstanceUuid, "vmInstanceUuid", vo="VmInstanceVO")
    if vm["state"] not in _VM_STATES:
        raise vm_state_error(vm["uuid"], vm["state"], "APIGetVmAttachableDataVolumeMsg", list(_VM_STATES))
    rows = await ctx.db.fetchall(
        "SELECT v.uuid FROM LocalStorageResourceRef root JOIN Host h ON h.uuid = root.hostUuid "
        "AND h.status = 'Connected' "
        "JOIN Volume v ON v.type = 'Data' AND v.state = 'Enabled' AND v.vmInstanceUuid IS NULL "
        "LEFT JOIN LocalStorageResourceRef r ON r.resourceUuid = v.uuid "
        "WHERE root.resourceUuid = ? AND ("
        " (v.status = 'Ready' AND r.hostUuid = root.hostUuid AND v.primaryStorageUuid = root.primaryStorageUuid)"
        " OR (v.status = 'NotInstantiated' AND (v.primaryStorageUuid IS NULL"
        "     OR v.primaryStorageUuid = root.primaryStorageUuid))) "
        "ORDER BY v.createDate, v.uuid", (vm["rootVolumeUuid"] or "",))
    return {"inventories": await _inventories(ctx, "Volume", [r["uuid"] for r in rows])}


@api("GetDataVolumeAttachableVm", GetDataVolumeAttachableVmMsg)
async def get_data_volume_attachable_vm(ctx: ApiContext, msg: GetDataVolumeAttachableVmMsg) -> dict[str, Any]:
    """The VMs AttachDataVolumeToVm would accept this data volume for."""
    v = await ctx.require("Volume", msg.volumeUuid, "volumeUuid")
    if (v["type"] != "Data" or v["vmInstanceUuid"] or v["state"] != "Enabled"
            or v["status"] not in ("Ready", "NotInstantiated")):
        return {"inventories": []}
    sql = ("SELECT vm.uuid FROM VmInstance vm JOIN LocalStorageResourceRef root ON root.resourceUuid = "
           "vm.rootVolumeUuid JOIN Host h ON h.uuid = root.hostUuid AND h.status = 'Connected' "
           "WHERE vm.type = 'UserVm' AND vm.state IN ('Running', 'Stopped')")
    params: tuple[Any, ...] = ()
    if v["status"] == "Ready":
        sql += (" AND (root.hostUuid, root.primaryStorageUuid) = (SELECT hostUuid, primaryStorageUuid FROM "
                "LocalStorageResourceRef WHERE resourceUuid = ?) AND root.primaryStorageUuid = ?")
        params = (v["uuid"], v["primaryStorageUuid"] or "")
    elif v["primaryStorageUuid"]:
        sql += " AND root.primaryStorageUuid = ?"
        params = (v["primaryStorageUuid"],)
    rows = await ctx.db.fetchall(sql + " ORDER BY vm.createDate, vm.uuid", params)
    return {"inventories": await _inventories(ctx, "VmInstance", [r["uuid"] for r in rows])}
