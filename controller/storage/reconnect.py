"""``ReconnectPrimaryStorage`` and ``SyncPrimaryStorageCapacity`` for local primary storage (1.0 names).

* ReconnectPrimaryStorage (``uuid``): status ``Connecting``, then ``/localstorage/init`` on every Connected
  host of the clusters the storage is attached to (the same call a host connect makes: the directory is
  created, capacity measured); each reply is recorded (per-host ref, storage totals). ``Connected`` when every
  such host answered, else ``Disconnected`` and 502 naming the hosts that failed and why (the hosts that did
  answer keep their fresh figures). A storage attached to no cluster (or whose clusters have no Connected
  host) has nothing to check: Connected.
* SyncPrimaryStorageCapacity (``primaryStorageUuid``): ``/localstorage/capacity`` on those hosts and the
  figures recorded the same way (available = the host's total minus what its volumes and snapshots hold);
  the status is not changed; a host that fails is named in a 502 after the others were recorded.
* Both run in the storage's work queue; unknown uuids are 404 SYS.1003 naming the field.
"""

from __future__ import annotations

import asyncio
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid, UuidMessage
from controller.api.registry import api, by_uuid
from controller.errors import AgentFailure, ApiError, InvalidArgument
from controller.storage import capacity
from controller.util import now_iso
from kvmagent.contract import storage as sc


class SyncPrimaryStorageCapacityMsg(ApiMessage):
    primaryStorageUuid: Uuid


async def _local(ctx: ApiContext, uuid: str, field: str) -> dict[str, Any]:
    ps = await ctx.require("PrimaryStorage", uuid, field)
    if ps["type"] != "LocalStorage":
        raise InvalidArgument(f"invalid field[{field}]: primary storage[uuid:{uuid}] is {ps['type']}; only "
                              "LocalStorage is supported")
    return ps


async def _each_host(ctx: ApiContext, ps: dict[str, Any], make: Any) -> list[str]:
    """Send ``make(host)`` to every Connected host of the storage concurrently, record each reply; the
    failures as "host ip: reason" texts."""
    agents = ctx.core.services["agents"]
    hosts = await capacity.ps_hosts(ctx.db, ps["uuid"], connected_only=True)

    async def one(host: dict[str, Any]) -> str | None:
        try:
            reply = await agents.call(host, make(host), timeout=120)
        except ApiError as e:
            return f"host[uuid:{host['uuid']}, ip:{host['managementIp']}]: {e.details}"
        async with ctx.db.write() as tx:
            await capacity.record_host(tx, ps["uuid"], host["uuid"], reply)
        return None

    results = await asyncio.gather(*(one(h) for h in hosts))
    return [r for r in results if r]


async def _set_status(ctx: ApiContext, uuid: str, status: str) -> None:
    async with ctx.db.write() as tx:
        await tx.update("PrimaryStorage", {"uuid": uuid}, {"status": status, "lastOpDate": now_iso()})


@api("ReconnectPrimaryStorage", UuidMessage, job=True, queue=by_uuid)
async def reconnect_primary_storage(ctx: ApiContext, msg: UuidMessage) -> dict[str, Any]:
    """Re-initialise the storage on every Connected host of its clusters: Connected, or Disconnected and why."""
    ps = await _local(ctx, msg.uuid, "uuid")
    await _set_status(ctx, ps["uuid"], "Connecting")
    try:
        failed = await _each_host(ctx, ps, lambda h: sc.InitCmd(storagePath=ps["url"], primaryStorageUuid=ps["uuid"],
                                                                 hostUuid=h["uuid"]))
    except BaseException:
        await _set_status(ctx, ps["uuid"], "Disconnected")
        raise
    if failed:
        await _set_status(ctx, ps["uuid"], "Disconnected")
        raise AgentFailure(f"failed to reconnect primary storage[uuid:{ps['uuid']}, name:{ps['name']}] on "
                           f"{len(failed)} host(s): {'; '.join(failed)}")
    await _set_status(ctx, ps["uuid"], "Connected")
    return {"inventory": await ctx.inventory("PrimaryStorage", ps["uuid"])}


@api("SyncPrimaryStorageCapacity", SyncPrimaryStorageCapacityMsg, job=True, queue=lambda m: m.primaryStorageUuid)
async def sync_primary_storage_capacity(ctx: ApiContext, msg: SyncPrimaryStorageCapacityMsg) -> dict[str, Any]:
    """Re-measure the storage's capacity on every Connected host of its clusters."""
    ps = await _local(ctx, msg.primaryStorageUuid, "primaryStorageUuid")
    failed = await _each_host(ctx, ps, lambda h: sc.CapacityCmd(storagePath=ps["url"]))
    if failed:
        raise AgentFailure(f"failed to sync the capacity of primary storage[uuid:{ps['uuid']}] on "
                           f"{len(failed)} host(s): {'; '.join(failed)}")
    return {"inventory": await ctx.inventory("PrimaryStorage", ps["uuid"])}
