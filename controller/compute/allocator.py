"""Host allocation (DESIGN.md "Allocators"): capacity, L2 attachment, cluster/zone/host narrowing.

:func:`allocate_host` runs INSIDE the caller's write transaction and reserves the capacity there, so the
choice and the reservation commit together: two concurrent creations can never both take the last
capacity of a host (writes are serialised and the reservation is a conditional UPDATE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.compute.capacity import reserve
from controller.db.database import Tx
from controller.errors import OperationError


@dataclass
class Need:
    cpu: int
    memory: int
    l3_uuids: list[str]
    zone_uuid: str | None = None
    cluster_uuid: str | None = None
    host_uuid: str | None = None
    avoid: tuple[str, ...] = ()
    #: a shared primary storage (NFS, SharedMountPoint) the host must have connected (the VM's disks are there)
    shared_ps_uuid: str | None = None


def _where(need: Need) -> tuple[str, list[Any]]:
    sql = ["h.status = 'Connected'", "h.state = 'Enabled'", "h.availableCpuCapacity >= ?",
           "h.availableMemoryCapacity >= ?"]
    args: list[Any] = [need.cpu, need.memory]
    for l3 in dict.fromkeys(need.l3_uuids):
        sql.append("EXISTS (SELECT 1 FROM L3Network l3 JOIN L2NetworkClusterRef r ON r.l2NetworkUuid = "
                   "l3.l2NetworkUuid WHERE l3.uuid = ? AND r.clusterUuid = h.clusterUuid)")
        args.append(l3)
    for col, value in (("uuid", need.host_uuid), ("clusterUuid", need.cluster_uuid),
                       ("zoneUuid", need.zone_uuid)):
        if value:
            sql.append(f"h.{col} = ?")
            args.append(value)
    if need.shared_ps_uuid:
        sql.append("EXISTS (SELECT 1 FROM SharedStorageHostRef s WHERE s.primaryStorageUuid = ? AND "
                   "s.hostUuid = h.uuid)")
        args.append(need.shared_ps_uuid)
    if need.avoid:
        sql.append(f"h.uuid NOT IN ({','.join('?' * len(need.avoid))})")
        args += list(need.avoid)
    return " AND ".join(sql), args


async def allocate_host(tx: Tx, need: Need) -> dict[str, Any]:
    """Pick a random fitting host and reserve the capacity on it; 409 SYS.1006 naming why none fits."""
    where, args = _where(need)
    row = await tx.fetchone(f"SELECT h.* FROM Host h WHERE {where} ORDER BY RANDOM() LIMIT 1", args)
    if row is None:
        raise OperationError(await _why_none(tx, need))
    if not await reserve(tx, row["uuid"], need.cpu, need.memory):  # cannot happen inside one tx; be safe
        raise OperationError(f"host[uuid:{row['uuid']}] lost its capacity during allocation")
    return dict(row)


async def _why_none(tx: Tx, need: Need) -> str:
    base = (f"no host can run a VM needing {need.cpu} MHz CPU and {need.memory} bytes of memory on L3 "
            f"networks {need.l3_uuids}")
    scope = ", ".join(f"{k}={v}" for k, v in (("zoneUuid", need.zone_uuid), ("clusterUuid", need.cluster_uuid),
                                               ("hostUuid", need.host_uuid)) if v)
    up = await tx.fetchone("SELECT COUNT(*) FROM Host WHERE status='Connected' AND state='Enabled'")
    if not up or not up[0]:
        return base + ": there is no Connected and Enabled host"
    return base + (f" within {scope}" if scope else "") + ": no Connected and Enabled host with enough free " \
        "capacity is in a cluster to which the L2 networks of these L3 networks are attached"
