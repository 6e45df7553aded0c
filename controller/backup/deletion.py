"""Image deletion policies (reference §3.10, seed §8.3): DeleteImage's work, RecoverImage, ExpungeImage and
the image expunge task. DeleteImage's API lives in ``controller/resources/image.py`` and calls :func:`delete`.

Per image/backup-storage ref (``ImageBackupStorageRef``):

* **Direct**: the image directory is removed on the storage (SFTP), its capacity re-measured, the ref deleted.
  **Delay**/**Never**: the ref is ``Deleted`` and its bits stay. ``backupStorageUuids`` limits a delete to
  those storages (storages without a ref are ignored, so a repeated delete succeeds).
* Afterwards: no ref left → the image row goes (tags by trigger); every remaining ref Deleted → the image is
  ``Deleted`` (then it cannot be used to create VMs: no Ready copy). An image still downloading is removed at
  once whatever the policy.
* A legacy image without refs (a ``file://`` url read by hosts directly) has no bits on backup storage: Delay/
  Never mark it Deleted, Direct and expunge remove its row, recover makes it Ready.
* ``RecoverImage``/``ExpungeImage`` act on ``backupStorageUuids`` (default: every Deleted ref). A storage
  without a ref is a 400 naming it; a ref not Deleted, or no Deleted ref at all, is a 409. Recover → refs and
  image ``Ready``; expunge → bits, capacity, refs, and the row when no ref remains. A storage that cannot be
  reached fails the API (409) and keeps that ref, so the call can be retried.
* The task (``image/expungeInterval``, restarted on change) expunges Deleted refs/legacy images whose
  ``lastOpDate`` is older than ``image/expungePeriod``, never while the policy is ``Never``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.backup.sftp import BackupStorageError, Endpoint, remove_tree
from controller.backup.storage import refresh_capacity
from controller.core import Controller, on_start
from controller.errors import InvalidArgument, OperationError
from controller.storage import expunge_task
from controller.util import now_iso

log = logging.getLogger(__name__)
CATEGORY = "image"


async def _refs(core: Controller, image_uuid: str) -> list[dict[str, Any]]:
    rows = await core.db.fetchall(
        "SELECT b.*, r.id AS refId, r.installPath, r.status AS refStatus, r.lastOpDate AS refLastOpDate, "
        "r.backupStorageUuid "
        "FROM ImageBackupStorageRef r JOIN BackupStorage b ON b.uuid = r.backupStorageUuid "
        "WHERE r.imageUuid = ? ORDER BY r.id", (image_uuid,))
    return [dict(r) for r in rows]


async def _drop(core: Controller, refs: list[dict[str, Any]], *, best_effort: bool = False) -> None:
    """Per ref: remove the bits on its storage, re-measure the storage, delete the ref."""
    for r in refs:
        try:
            if r["installPath"]:
                await remove_tree(Endpoint.of(r, core), r["installPath"].rsplit("/", 1)[0])
        except BackupStorageError:
            if not best_effort:
                raise
        await refresh_capacity(core, r)
        async with core.db.write() as tx:
            await tx.execute("DELETE FROM ImageBackupStorageRef WHERE id=?", (r["refId"],))


async def _settle(core: Controller, image_uuid: str) -> None:
    """No ref left → row removed; all remaining refs Deleted → image Deleted."""
    async with core.db.write() as tx:
        refs = await tx.fetchall("SELECT status FROM ImageBackupStorageRef WHERE imageUuid=?", (image_uuid,))
        if not refs:
            await tx.execute("DELETE FROM Image WHERE uuid=?", (image_uuid,))
        elif all(r["status"] == "Deleted" for r in refs):
            await tx.execute("UPDATE Image SET status='Deleted', lastOpDate=? WHERE uuid=? AND status!='Deleted'",
                             (now_iso(), image_uuid))


async def _set_image(core: Controller, image_uuid: str, status: str) -> None:
    async with core.db.write() as tx:
        await tx.update("Image", {"uuid": image_uuid}, {"status": status, "lastOpDate": now_iso()})


async def delete(ctx: ApiContext, image_uuid: str, bs_uuids: list[str] | None) -> None:
    """DeleteImage with ``image/deletionPolicy`` (an unknown uuid is a no-op)."""
    core = ctx.core
    image = await core.db.fetchone("SELECT * FROM Image WHERE uuid=?", (image_uuid,))
    if image is None:
        return
    refs = await _refs(core, image_uuid)
    direct = expunge_task.policy(core, CATEGORY) == "Direct"
    if image["status"] == "Downloading":  # no Ready copy yet: removed at once
        await _drop(core, refs, best_effort=True)
        await _settle(core, image_uuid)
        return
    if not refs:  # legacy image: no bits on backup storage
        if bs_uuids:
            return
        if direct:
            async with core.db.write() as tx:
                await tx.execute("DELETE FROM Image WHERE uuid=?", (image_uuid,))
        elif image["status"] != "Deleted":
            await _set_image(core, image_uuid, "Deleted")
        return
    chosen = [r for r in refs if not bs_uuids or r["backupStorageUuid"] in bs_uuids]
    if direct:
        await _drop(core, chosen)
    else:
        async with core.db.write() as tx:
            for r in chosen:
                if r["refStatus"] != "Deleted":
                    await tx.execute("UPDATE ImageBackupStorageRef SET status='Deleted', lastOpDate=? WHERE id=?",
                                     (now_iso(), r["refId"]))
    await _settle(core, image_uuid)


class RecoverImageMsg(ApiMessage):
    imageUuid: Uuid
    backupStorageUuids: list[Uuid] | None = None


class ExpungeImageMsg(RecoverImageMsg):
    pass


async def _select(ctx: ApiContext, msg: RecoverImageMsg, api_name: str) -> tuple[dict[str, Any],
                                                                               list[dict[str, Any]]]:
    """The image row and the Deleted refs the message selects (1.0's rules; see the module doc)."""
    image = await ctx.require("Image", msg.imageUuid, "imageUuid", vo="ImageVO")
    refs = await _refs(ctx.core, msg.imageUuid)
    if msg.backupStorageUuids:
        by_bs = {r["backupStorageUuid"]: r for r in refs}
        chosen = []
        for bs in msg.backupStorageUuids:
            if bs not in by_bs:
                raise InvalidArgument(f"invalid field[backupStorageUuids]: the image[uuid:{msg.imageUuid}] is not "
                                      f"on the backup storage[uuid:{bs}]")
            if by_bs[bs]["refStatus"] != "Deleted":
                raise OperationError(f"the image[uuid:{msg.imageUuid}] on the backup storage[uuid:{bs}] is "
                                     f"{by_bs[bs]['refStatus']}, not Deleted; {api_name} needs a Deleted image")
            chosen.append(by_bs[bs])
        return image, chosen
    chosen = [r for r in refs if r["refStatus"] == "Deleted"]
    if not chosen and (refs or image["status"] != "Deleted"):
        raise OperationError(f"the image[uuid:{msg.imageUuid}, name:{image['name']}] is not deleted on any "
                             f"backup storage; {api_name} needs a Deleted image")
    return image, chosen


@api("RecoverImage", RecoverImageMsg, queue=lambda m: m.imageUuid)
async def recover_image(ctx: ApiContext, msg: RecoverImageMsg) -> dict[str, Any]:
    """Deleted refs (all, or those on ``backupStorageUuids``) and the image back to Ready."""
    _, chosen = await _select(ctx, msg, "RecoverImage")
    async with ctx.db.write() as tx:
        for r in chosen:
            await tx.execute("UPDATE ImageBackupStorageRef SET status='Ready', lastOpDate=? WHERE id=?",
                             (now_iso(), r["refId"]))
        await tx.update("Image", {"uuid": msg.imageUuid}, {"status": "Ready", "lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("Image", msg.imageUuid)}


@api("ExpungeImage", ExpungeImageMsg, job=True, queue=lambda m: m.imageUuid)
async def expunge_image(ctx: ApiContext, msg: ExpungeImageMsg) -> dict[str, Any]:
    """Remove Deleted copies now (bits, capacity, refs); the image row goes when no ref remains."""
    _, chosen = await _select(ctx, msg, "ExpungeImage")
    if chosen:
        await _drop(ctx.core, chosen)
    await _settle(ctx.core, msg.imageUuid)
    return {}


async def expunge_due(core: Controller) -> int:
    """One run of the task: expunge Deleted refs and legacy images past expungePeriod; how many images."""
    return await expunge_task.run_due(
        core, CATEGORY,
        "SELECT DISTINCT imageUuid AS uuid FROM ImageBackupStorageRef WHERE status='Deleted' AND lastOpDate <= ? "
        "UNION SELECT uuid FROM Image i WHERE status='Deleted' AND lastOpDate <= ? AND NOT EXISTS "
        "(SELECT 1 FROM ImageBackupStorageRef r WHERE r.imageUuid = i.uuid)",
        functools.partial(_expunge_due_refs, core))


async def _expunge_due_refs(core: Controller, uuid: str, bound: str) -> None:
    """Re-checked under the image's queue: a recover in between wins."""
    image = await core.db.fetchone("SELECT status, lastOpDate FROM Image WHERE uuid=?", (uuid,))
    if image is None:
        return
    all_refs = await _refs(core, uuid)
    if not all_refs:  # legacy image
        if image["status"] == "Deleted" and image["lastOpDate"] <= bound:
            await _settle(core, uuid)
        return
    refs = [r for r in all_refs if r["refStatus"] == "Deleted" and r["refLastOpDate"] <= bound]
    try:
        await _drop(core, refs)
    except BackupStorageError as e:  # storage unreachable: retried at the next run
        log.warning("expunge of image %s failed, retried later: %s", uuid, e.details)
    await _settle(core, uuid)
    log.info("image %s: %d deleted copies expunged", uuid, len(refs))


@on_start(62, "image-deletion")
async def _bootstrap(core: Controller) -> None:
    expunge_task.install(core, CATEGORY, expunge_due)
