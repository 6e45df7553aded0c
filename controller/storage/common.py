"""Lookups shared by the volume, snapshot and migration APIs: where a volume lives and its agent."""

from __future__ import annotations

from typing import Any

from controller.core import Controller
from controller.errors import OperationError
from controller.storage import shared


async def volume_ref(core: Controller, volume_uuid: str) -> dict[str, Any] | None:
    row = await core.db.fetchone("SELECT * FROM LocalStorageResourceRef WHERE resourceUuid=?", (volume_uuid,))
    return dict(row) if row else None


async def ps_row(core: Controller, ps_uuid: str) -> dict[str, Any]:
    row = await core.db.fetchone("SELECT * FROM PrimaryStorage WHERE uuid=?", (ps_uuid,))
    if row is None:
        raise OperationError(f"primary storage[uuid:{ps_uuid}] no longer exists")
    return dict(row)


async def connected_host(core: Controller, host_uuid: str) -> dict[str, Any]:
    """The host row; OperationError unless Connected (its agent must do the work)."""
    row = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (host_uuid,))
    if row is None:
        raise OperationError(f"host[uuid:{host_uuid}] no longer exists")
    if row["status"] != "Connected":
        raise OperationError(f"host[uuid:{host_uuid}] is {row['status']}, not Connected; reconnect it first")
    return dict(row)


async def snapshot_rows(core: Controller, volume_uuid: str) -> list[dict[str, Any]]:
    rows = await core.db.fetchall("SELECT * FROM VolumeSnapshot WHERE volumeUuid=? ORDER BY createDate",
                                  (volume_uuid,))
    return [dict(r) for r in rows]


async def located(core: Controller, volume: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(host, primary storage) of an instantiated volume on local storage; on a shared storage (no local ref) the
    host is the one running its VM, else a Connected host that has the storage connected, and the storage's
    ``url`` is where its files are on every host (:func:`shared_located`)."""
    ref = await volume_ref(core, volume["uuid"])
    if ref is None and await shared.is_shared(core.db, volume.get("primaryStorageUuid")):
        return await shared_located(core, volume)
    if ref is None:
        raise OperationError(f"volume[uuid:{volume['uuid']}] is not on local storage (no LocalStorageResourceRef)")
    return await connected_host(core, ref["hostUuid"]), await ps_row(core, ref["primaryStorageUuid"])


async def shared_located(core: Controller, volume: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ps = await ps_row(core, volume["primaryStorageUuid"])
    vm = await core.db.fetchone("SELECT hostUuid FROM VmInstance WHERE uuid=?", (volume.get("vmInstanceUuid"),))
    rows = await core.db.fetchall(
        "SELECT h.* FROM Host h JOIN SharedStorageHostRef r ON r.hostUuid = h.uuid WHERE r.primaryStorageUuid=? "
        "AND h.status='Connected' ORDER BY h.uuid = ? DESC, h.createDate", (ps["uuid"], vm["hostUuid"] if vm else None))
    if not rows:
        raise OperationError(f"no Connected host has the shared primary storage[uuid:{ps['uuid']}, url:{ps['url']}] "
                             f"of volume[uuid:{volume['uuid']}] connected; reconnect a host of its clusters")
    return dict(rows[0]), {**ps, "url": shared.storage_path(ps)}
