"""Local primary storage capacity (reference §3.5), kept in ``LocalStorageHostRef`` per (PS, host).

Invariant (outside a running migration): for every (PS, host) ref,
``availableCapacity = totalCapacity - SUM(LocalStorageResourceRef.size)`` of the resources on that host.
Every resource ref is inserted with :func:`add_resource` (capacity taken) and removed with
:func:`remove_resource` (capacity returned), inside the caller's transaction, so capacity moves exactly once.
A primary storage's totals are the sums over its host refs (:func:`sync_ps`). A shared storage (NFS,
SharedMountPoint) has one capacity, not one per host: these functions hand it to :mod:`.shared`.
"""

from __future__ import annotations

from typing import Any

from controller.db.database import Database, Tx
from controller.errors import OperationError
from controller.storage import shared
from controller.util import now_iso


async def ps_hosts(db: Database | Tx, ps_uuid: str, *, connected_only: bool = False) -> list[dict[str, Any]]:
    """The hosts of the clusters the primary storage is attached to (oldest first); only the Connected ones
    with ``connected_only``."""
    rows = await db.fetchall(
        "SELECT h.* FROM Host h JOIN PrimaryStorageClusterRef r ON r.clusterUuid = h.clusterUuid "
        "WHERE r.primaryStorageUuid=?" + (" AND h.status = 'Connected'" if connected_only else "")
        + " ORDER BY h.createDate", (ps_uuid,))
    return [dict(r) for r in rows]


async def record_host(tx: Tx, ps_uuid: str, host_uuid: str, reply: Any) -> None:
    """Upsert the host ref from an agent reply; availability derived from the resources held there."""
    row = await tx.fetchone("SELECT COALESCE(SUM(size), 0) FROM LocalStorageResourceRef "
                            "WHERE primaryStorageUuid=? AND hostUuid=?", (ps_uuid, host_uuid))
    used = int(row[0]) if row else 0
    now = now_iso()
    await tx.execute(
        "INSERT INTO LocalStorageHostRef (primaryStorageUuid, hostUuid, totalCapacity, availableCapacity, "
        "totalPhysicalCapacity, availablePhysicalCapacity, createDate, lastOpDate) VALUES (?,?,?,?,?,?,?,?) "
        "ON CONFLICT(primaryStorageUuid, hostUuid) DO UPDATE SET totalCapacity=excluded.totalCapacity, "
        "availableCapacity=excluded.availableCapacity, totalPhysicalCapacity=excluded.totalPhysicalCapacity, "
        "availablePhysicalCapacity=excluded.availablePhysicalCapacity, lastOpDate=excluded.lastOpDate",
        (ps_uuid, host_uuid, reply.totalCapacity, reply.totalCapacity - used, reply.totalPhysicalCapacity,
         reply.availablePhysicalCapacity, now, now))
    await sync_ps(tx, ps_uuid)


async def sync_ps(tx: Tx, ps_uuid: str) -> None:
    """PS totals = sums over its host refs (a shared storage: its own figures, :func:`shared.sync`)."""
    if await shared.is_shared(tx, ps_uuid):
        await shared.sync(tx, ps_uuid)
        return
    await tx.execute(
        "UPDATE PrimaryStorage SET "
        "totalCapacity=(SELECT COALESCE(SUM(totalCapacity),0) FROM LocalStorageHostRef WHERE primaryStorageUuid=?), "
        "availableCapacity=(SELECT COALESCE(SUM(availableCapacity),0) FROM LocalStorageHostRef "
        "WHERE primaryStorageUuid=?), "
        "totalPhysicalCapacity=(SELECT COALESCE(SUM(totalPhysicalCapacity),0) FROM LocalStorageHostRef "
        "WHERE primaryStorageUuid=?), "
        "availablePhysicalCapacity=(SELECT COALESCE(SUM(availablePhysicalCapacity),0) FROM LocalStorageHostRef "
        "WHERE primaryStorageUuid=?), lastOpDate=? WHERE uuid=?",
        (ps_uuid, ps_uuid, ps_uuid, ps_uuid, now_iso(), ps_uuid))


async def reserve(tx: Tx, ps_uuid: str, host_uuid: str, size: int, *, force: bool = False) -> None:
    """Take ``size`` bytes on the host; OperationError (nothing changed) when it lacks them, unless ``force``
    (the bits exist already: reality wins over accounting)."""
    cur = await tx.execute(
        "UPDATE LocalStorageHostRef SET availableCapacity = availableCapacity - ?, lastOpDate=? "
        "WHERE primaryStorageUuid=? AND hostUuid=? AND (availableCapacity >= ? OR ?)",
        (size, now_iso(), ps_uuid, host_uuid, size, int(force)))
    if cur.rowcount != 1:
        ref = await tx.fetchone("SELECT availableCapacity FROM LocalStorageHostRef WHERE primaryStorageUuid=? "
                                "AND hostUuid=?", (ps_uuid, host_uuid))
        if ref is None:
            raise OperationError(f"host[uuid:{host_uuid}] is not a host of local primary storage[uuid:{ps_uuid}] "
                                 "(no LocalStorageHostRef; reconnect the host)")
        raise OperationError(f"the local primary storage[uuid:{ps_uuid}] on host[uuid:{host_uuid}] has not "
                             f"enough capacity: {size} bytes needed, {ref[0]} available")
    await sync_ps(tx, ps_uuid)


async def release(tx: Tx, ps_uuid: str, host_uuid: str, size: int) -> None:
    await tx.execute("UPDATE LocalStorageHostRef SET availableCapacity = MIN(totalCapacity, availableCapacity + ?), "
                     "lastOpDate=? WHERE primaryStorageUuid=? AND hostUuid=?", (size, now_iso(), ps_uuid, host_uuid))
    await sync_ps(tx, ps_uuid)


async def add_resource(tx: Tx, ps_uuid: str, host_uuid: str, resource_uuid: str, resource_type: str, size: int,
                       *, force: bool = False, reserved: bool = False) -> None:
    """Insert the resource ref and take its capacity (``reserved``: the caller took it already)."""
    if await shared.is_shared(tx, ps_uuid):  # one capacity for every host
        await shared.add_resource(tx, ps_uuid, resource_uuid, resource_type, size, force=force or reserved)
        return
    if not reserved:
        await reserve(tx, ps_uuid, host_uuid, size, force=force)
    now = now_iso()
    await tx.insert("LocalStorageResourceRef", {
        "resourceUuid": resource_uuid, "primaryStorageUuid": ps_uuid, "hostUuid": host_uuid, "size": size,
        "resourceType": resource_type, "createDate": now, "lastOpDate": now})


async def remove_resource(tx: Tx, resource_uuid: str) -> None:
    """Delete the resource ref and return its capacity; a missing ref is a no-op (exactly once)."""
    ref = await tx.fetchone("SELECT * FROM LocalStorageResourceRef WHERE resourceUuid=?", (resource_uuid,))
    if ref is None:
        await shared.remove_resource(tx, resource_uuid)
        return
    await tx.execute("DELETE FROM LocalStorageResourceRef WHERE resourceUuid=?", (resource_uuid,))
    await release(tx, ref["primaryStorageUuid"], ref["hostUuid"], int(ref["size"]))


async def resize_resource(tx: Tx, resource_uuid: str, size: int) -> None:
    """Change a ref's size, moving the difference (forced: the bits exist already)."""
    ref = await tx.fetchone("SELECT * FROM LocalStorageResourceRef WHERE resourceUuid=?", (resource_uuid,))
    if ref is None:
        await shared.resize_resource(tx, resource_uuid, size)
        return
    if int(ref["size"]) == size:
        return
    delta = size - int(ref["size"])
    if delta > 0:
        await reserve(tx, ref["primaryStorageUuid"], ref["hostUuid"], delta, force=True)
    else:
        await release(tx, ref["primaryStorageUuid"], ref["hostUuid"], -delta)
    await tx.update("LocalStorageResourceRef", {"resourceUuid": resource_uuid}, {"size": size, "lastOpDate": now_iso()})
