"""Shared primary storage (NFS, SharedMountPoint; issue 15): capacity and the hosts that have it connected.

Capacity is one figure for the whole storage (every host sees the same file system), kept in the PrimaryStorage
row: ``totalCapacity``/``totalPhysicalCapacity``/``availablePhysicalCapacity`` from the file system (statvfs, as
the last host that connected it reported), ``availableCapacity = totalCapacity - SUM(SharedStorageResourceRef.size)``.
Every volume or snapshot on it holds one SharedStorageResourceRef, inserted with its size taken (exactly once) and
removed with its size returned; :mod:`controller.storage.capacity` dispatches here for shared storages, so the
volume, snapshot and deletion code is the same for both kinds. A migration moves no storage capacity (the files
stay where they are); only CPU and memory move.

Connecting (:func:`connect_host`): ``/sharedstorage/connect`` on the host (NFS mount, the same-file-system check),
then its SharedStorageHostRef. The first host to connect a storage writes its marker; each later one must find it.
Connects of one storage are serialised so two "first" hosts never both write it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controller.core import Controller
from controller.db.database import Database, Tx
from controller.errors import ApiError, OperationError
from controller.util import now_iso
from kvmagent.contract import sharedstorage as ssc

log = logging.getLogger(__name__)

SHARED_TYPES = ("NFS", "SharedMountPoint")
_locks: dict[str, asyncio.Lock] = {}


def is_shared_type(ps_type: str | None) -> bool:
    return ps_type in SHARED_TYPES


def lock(key: str) -> asyncio.Lock:
    """A controller-wide lock (a storage's connects; an image's download into a storage's shared cache)."""
    return _locks.setdefault(key, asyncio.Lock())


async def is_shared(db: Database | Tx, ps_uuid: str | None) -> bool:
    if not ps_uuid:
        return False
    row = await db.fetchone("SELECT type FROM PrimaryStorage WHERE uuid=?", (ps_uuid,))
    return row is not None and is_shared_type(row["type"])


def storage_path(ps: dict[str, Any]) -> str:
    """Where the storage's files are on every host: the mount path (NFS) or the url (SharedMountPoint)."""
    return str(ps["mountPath"] or ps["url"])


# ---------------------------------------------------------------------------------------------- capacity
async def sync(tx: Tx, ps_uuid: str) -> None:
    await tx.execute(
        "UPDATE PrimaryStorage SET availableCapacity = totalCapacity - (SELECT COALESCE(SUM(size), 0) FROM "
        "SharedStorageResourceRef WHERE primaryStorageUuid=?), lastOpDate=? WHERE uuid=?",
        (ps_uuid, now_iso(), ps_uuid))


async def record_capacity(tx: Tx, ps_uuid: str, reply: Any) -> None:
    """The file system's figures from an agent reply (the same on every host)."""
    await tx.execute("UPDATE PrimaryStorage SET totalCapacity=?, totalPhysicalCapacity=?, availablePhysicalCapacity=? "
                     "WHERE uuid=?", (reply.totalCapacity, reply.totalPhysicalCapacity,
                                      reply.availablePhysicalCapacity, ps_uuid))
    await sync(tx, ps_uuid)


async def add_resource(tx: Tx, ps_uuid: str, resource_uuid: str, resource_type: str, size: int, *,
                       force: bool = False) -> None:
    """Insert the ref and take ``size``; OperationError (nothing changed) when the storage lacks it, unless
    ``force`` (the bits exist already)."""
    if not force:
        row = await tx.fetchone("SELECT availableCapacity FROM PrimaryStorage WHERE uuid=?", (ps_uuid,))
        if row is None or int(row[0]) < size:
            raise OperationError(f"the shared primary storage[uuid:{ps_uuid}] has not enough capacity: {size} bytes "
                                 f"needed, {row[0] if row else 0} available")
    now = now_iso()
    await tx.insert("SharedStorageResourceRef", {"resourceUuid": resource_uuid, "primaryStorageUuid": ps_uuid,
                                                 "size": size, "resourceType": resource_type, "createDate": now,
                                                 "lastOpDate": now})
    await sync(tx, ps_uuid)


async def remove_resource(tx: Tx, resource_uuid: str) -> bool:
    """Delete the ref and return its size; False when there is none (exactly once)."""
    ref = await tx.fetchone("SELECT primaryStorageUuid FROM SharedStorageResourceRef WHERE resourceUuid=?",
                            (resource_uuid,))
    if ref is None:
        return False
    await tx.execute("DELETE FROM SharedStorageResourceRef WHERE resourceUuid=?", (resource_uuid,))
    await sync(tx, ref["primaryStorageUuid"])
    return True


async def resize_resource(tx: Tx, resource_uuid: str, size: int) -> bool:
    ref = await tx.fetchone("SELECT primaryStorageUuid FROM SharedStorageResourceRef WHERE resourceUuid=?",
                            (resource_uuid,))
    if ref is None:
        return False
    await tx.update("SharedStorageResourceRef", {"resourceUuid": resource_uuid}, {"size": size,
                                                                                   "lastOpDate": now_iso()})
    await sync(tx, ref["primaryStorageUuid"])
    return True


# ---------------------------------------------------------------------------------------------- hosts
async def attached(core: Controller, cluster_uuid: str) -> list[dict[str, Any]]:
    """The shared storages attached to the cluster (oldest first)."""
    rows = await core.db.fetchall(
        "SELECT ps.* FROM PrimaryStorage ps JOIN PrimaryStorageClusterRef r ON r.primaryStorageUuid = ps.uuid "
        f"WHERE r.clusterUuid = ? AND ps.type IN {SHARED_TYPES!r} ORDER BY ps.createDate", (cluster_uuid,))
    return [dict(r) for r in rows]


async def connected_on(core: Controller, host_uuid: str, ps_uuid: str) -> bool:
    return await core.db.fetchone("SELECT 1 FROM SharedStorageHostRef WHERE primaryStorageUuid=? AND hostUuid=?",
                                  (ps_uuid, host_uuid)) is not None


async def connect_host(core: Controller, host: dict[str, Any], ps: dict[str, Any]) -> None:
    """Connect ``ps`` on ``host`` (module docstring); raises OperationError naming the url and the host."""
    async with lock("ps-connect-" + ps["uuid"]):
        first = await core.db.fetchone("SELECT 1 FROM SharedStorageHostRef WHERE primaryStorageUuid=? AND "
                                       "hostUuid != ?", (ps["uuid"], host["uuid"])) is None
        try:
            reply = await core.services["agents"].call(host, ssc.ConnectSharedStorageCmd(
                primaryStorageUuid=ps["uuid"], hostUuid=host["uuid"], type=ps["type"], url=ps["url"],
                mountPath=storage_path(ps), createMarker=first), timeout=300)
        except ApiError as e:
            raise OperationError(f"host[uuid:{host['uuid']}, managementIp:{host['managementIp']}] cannot use "
                                 f"{ps['type']} primary storage[uuid:{ps['uuid']}, url:{ps['url']}]: {e.details}",
                                 cause=e.body()["error"]) from e
        now = now_iso()
        async with core.db.write() as tx:
            await tx.execute("INSERT INTO SharedStorageHostRef (primaryStorageUuid, hostUuid, createDate, lastOpDate) "
                             "VALUES (?,?,?,?) ON CONFLICT(primaryStorageUuid, hostUuid) DO UPDATE SET "
                             "lastOpDate=excluded.lastOpDate", (ps["uuid"], host["uuid"], now, now))
            await record_capacity(tx, ps["uuid"], reply)


async def disconnect_hosts(core: Controller, ps: dict[str, Any], hosts: list[dict[str, Any]]) -> None:
    """Forget the hosts' connection of ``ps``; NFS is unmounted on the Connected ones (a failure is only logged:
    1.0's "detach always succeeds even if unmount failed")."""
    async with core.db.write() as tx:
        for h in hosts:
            await tx.execute("DELETE FROM SharedStorageHostRef WHERE primaryStorageUuid=? AND hostUuid=?",
                             (ps["uuid"], h["uuid"]))
    if ps["type"] != "NFS":
        return
    for h in hosts:
        if h["status"] != "Connected":
            continue
        try:
            await core.services["agents"].call(h, ssc.UnmountSharedStorageCmd(primaryStorageUuid=ps["uuid"],
                                                                             mountPath=storage_path(ps)))
        except ApiError as e:
            log.warning("could not unmount NFS primary storage %s (%s) on host %s: %s", ps["uuid"], ps["url"],
                        h["uuid"], e.details)
