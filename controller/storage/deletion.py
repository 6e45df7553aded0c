"""Data volume deletion policies (reference §3.10, seed §8.4): DeleteDataVolume, RecoverDataVolume,
ExpungeDataVolume and the volume expunge task.

Guarantees:

* ``DeleteDataVolume`` refuses root volumes (delete the VM) and volumes already ``Deleted``; an unknown uuid
  succeeds (1.0). An attached volume is detached first (live when its VM runs). Then per ``volume/deletionPolicy``:
  **Direct** deletes the bits (file and snapshots) on the host, the capacity refs and the rows; **Delay** and
  **Never** mark it ``Deleted`` and keep its bits, snapshots and capacity refs: the capacity stays held while the
  bits occupy the disk, so a recover never finds its space taken and ``available = total - Σ refs`` holds.
* ``RecoverDataVolume`` (Deleted only) → ``Ready``, or ``NotInstantiated`` when it never had bits; it can be
  attached again. ``ExpungeDataVolume`` (Deleted only) → bits, snapshots, refs (capacity returned) and rows;
  when the host cannot delete the bits nothing is removed from the database (retry later).
* A destroyed VM's data volumes are detached (1.0); with ``vm/dataVolume.deleteOnVmDestroy`` true (default
  false) each is then deleted as ``DeleteDataVolume`` would, with ``volume/deletionPolicy``, in its own queue.
  When Direct cannot delete the bits (host unreachable), the volume is marked ``Deleted`` instead, so the
  expunge task retries it. Errors there never fail ``DestroyVmInstance`` (the hook runs quietly, logged).
* The expunge task (``volume/expungeInterval``, restarted on change) expunges Deleted *data* volumes whose
  ``lastOpDate`` is older than ``volume/expungePeriod``, never while the policy is ``Never``. Tags go with the
  row (DB trigger).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import UuidDeleteMessage, UuidMessage
from controller.api.registry import api, by_uuid
from controller.core import Controller, on_start
from controller.errors import ApiError, InvalidArgument, NotFound, OperationError
from controller.storage import expunge_task
from controller.storage.volumes import delete_bits, detach, forget
from controller.util import now_iso

log = logging.getLogger(__name__)
CATEGORY = "volume"


async def _data_volume(ctx: ApiContext, uuid: str) -> dict[str, Any]:
    row = await ctx.db.fetchone("SELECT * FROM Volume WHERE uuid=?", (uuid,))
    if row is None:
        raise NotFound(f"invalid field[uuid], resource[uuid:{uuid}, type:VolumeVO] not found (an expunged "
                       "volume cannot be recovered)")
    if row["type"] != "Data":
        raise InvalidArgument(f"invalid field[uuid]: volume[uuid:{uuid}] is a {row['type']} volume; only data "
                              "volumes are deleted, recovered and expunged by this API (root volumes go with "
                              "their vm)")
    return dict(row)


def _must_be_deleted(volume: dict[str, Any], api_name: str) -> None:
    if volume["status"] != "Deleted":
        raise OperationError(f"the data volume[uuid:{volume['uuid']}, name:{volume['name']}] is not deleted "
                             f"(status {volume['status']}); {api_name} needs a Deleted volume")


async def expunge(core: Controller, volume: dict[str, Any]) -> None:
    """Bits (file + snapshots) on the host, then in one transaction refs (capacity) and rows."""
    await delete_bits(core, volume)
    await forget(core, volume["uuid"])
    log.info("data volume %s (%s) expunged", volume["uuid"], volume["name"])


@api("DeleteDataVolume", UuidDeleteMessage, job=True, queue=by_uuid)
async def delete_data_volume(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a data volume with the ``volume/deletionPolicy`` (detached first when attached)."""
    try:
        volume = await _data_volume(ctx, msg.uuid)
    except NotFound:
        return {}
    if volume["status"] == "Deleted":
        raise OperationError(f"the data volume[uuid:{msg.uuid}, name:{volume['name']}] is already deleted; "
                             "recover it with RecoverDataVolume or expunge it with ExpungeDataVolume")
    if volume["vmInstanceUuid"]:
        await detach(ctx, volume)
    await delete_detached(ctx.core, volume)
    return {}


async def delete_detached(core: Controller, volume: dict[str, Any]) -> None:
    """``volume/deletionPolicy`` on a detached data volume: Direct expunges it (bits, refs, rows; an error of
    the host propagates with nothing removed), Delay and Never mark it ``Deleted`` (bits and refs kept)."""
    if expunge_task.policy(core, CATEGORY) == "Direct":
        await expunge(core, volume)
        return
    await _mark_deleted(core, volume["uuid"])


async def _mark_deleted(core: Controller, uuid: str) -> None:
    async with core.db.write() as tx:
        await tx.update("Volume", {"uuid": uuid}, {"status": "Deleted", "lastOpDate": now_iso()})


async def on_vm_destroyed(core: Controller, vm: dict[str, Any]) -> None:
    """Detach the destroyed VM's data volumes (one transaction); delete them if deleteOnVmDestroy."""
    async with core.db.write() as tx:
        rows = await tx.fetchall("SELECT uuid FROM Volume WHERE vmInstanceUuid=? AND type='Data'", (vm["uuid"],))
        await tx.execute("UPDATE Volume SET vmInstanceUuid=NULL, deviceId=NULL, lastOpDate=? WHERE "
                         "vmInstanceUuid=? AND type='Data'", (now_iso(), vm["uuid"]))
    if not core.services["configs"].get_bool("vm", "dataVolume.deleteOnVmDestroy"):
        return
    for r in rows:
        uuid: str = r["uuid"]
        await core.queues.run(uuid, functools.partial(_delete_on_vm_destroy, core, uuid))


async def _delete_on_vm_destroy(core: Controller, uuid: str) -> None:
    row = await core.db.fetchone("SELECT * FROM Volume WHERE uuid=?", (uuid,))
    if row is None or row["status"] == "Deleted" or row["vmInstanceUuid"]:
        return  # deleted or attached again meanwhile: someone else decided
    try:
        await delete_detached(core, dict(row))
    except ApiError as e:
        log.warning("data volume %s of a destroyed vm: bits not deleted (%s); marked Deleted for the expunge "
                    "task", uuid, e.details)
        await _mark_deleted(core, uuid)



@api("RecoverDataVolume", UuidMessage, queue=by_uuid)
async def recover_data_volume(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """A Deleted data volume back to Ready (NotInstantiated when it never had bits)."""
    volume = await _data_volume(ctx, msg.uuid)
    _must_be_deleted(volume, "RecoverDataVolume")
    status = "Ready" if volume["installPath"] else "NotInstantiated"
    async with ctx.db.write() as tx:
        await tx.update("Volume", {"uuid": msg.uuid}, {"status": status, "lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("Volume", msg.uuid)}


@api("ExpungeDataVolume", UuidMessage, job=True, queue=by_uuid)
async def expunge_data_volume(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """Remove a Deleted data volume now: bits, snapshots, capacity refs and rows."""
    volume = await _data_volume(ctx, msg.uuid)
    _must_be_deleted(volume, "ExpungeDataVolume")
    await expunge(ctx.core, volume)
    return {}


async def expunge_due(core: Controller) -> int:
    """One run of the task: expunge the Deleted data volumes past expungePeriod; how many were due."""
    return await expunge_task.run_due(core, CATEGORY, "SELECT uuid FROM Volume WHERE type='Data' AND "
                                      "status='Deleted' AND lastOpDate <= ?",
                                      functools.partial(_expunge_if_still_deleted, core))


async def _expunge_if_still_deleted(core: Controller, uuid: str, bound: str) -> None:
    row = await core.db.fetchone("SELECT * FROM Volume WHERE uuid=?", (uuid,))
    if row is None or row["status"] != "Deleted" or row["type"] != "Data":
        return
    try:
        await expunge(core, dict(row))
    except ApiError as e:  # host gone or disconnected: retried at the next run
        log.warning("expunge of data volume %s failed, retried later: %s", uuid, e.details)


@on_start(61, "volume-deletion")
async def _bootstrap(core: Controller) -> None:
    expunge_task.install(core, CATEGORY, expunge_due)
