"""Lookups shared by the volume, snapshot and migration APIs: where a volume lives and its agent."""

from __future__ import annotations

from typing import Any

from controller.core import Controller
from controller.errors import OperationError


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
    """(host, primary storage) of an instantiated volume on local storage."""
    ref = await volume_ref(core, volume["uuid"])
    if ref is None:
        raise OperationError(f"volume[uuid:{volume['uuid']}] is not on local storage (no LocalStorageResourceRef)")
    return await connected_host(core, ref["hostUuid"]), await ps_row(core, ref["primaryStorageUuid"])
