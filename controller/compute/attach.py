"""Any order of building a cloud (issue 18, reliability 2): attaching a primary storage or an L2 network to a
cluster brings every Connected host of the cluster to the state a host joining later gets from its connect
sequence (:mod:`.connect`), and detaching undoes it.

* Local primary storage attached: ``/localstorage/init`` on each Connected host + its ``LocalStorageHostRef``
  and capacity. A host that fails it fails the attach (the API undoes the attach; refs made are removed).
  Detached: the refs of the cluster's hosts that hold no volume or snapshot there are removed (the directory
  and its data stay on the host; a volume that still lives there keeps its ref and capacity).
* L2 network attached: each Connected host must have the L2's bridge (``/host/checkbridge``), as the connect
  sequence requires; a host without it fails the attach, naming the host and the bridge.
* Backup storage attached to a zone: hosts keep nothing of a backup storage (they fetch images by URL at each
  start), so a host already there and one joining later are in the same state: no listener.

A host connecting while an attach runs: the attach sees it once it is Connected, and the connect sequence
checks again after marking the host Connected (:func:`.connect.connect`), so one of the two always does it.
"""

from __future__ import annotations

import logging
from typing import Any

from controller.api.context import ApiContext
from controller.compute.connect import init_local_storage, l2_bridge
from controller.errors import ApiError, OperationError
from controller.resources import attachments
from controller.storage.capacity import sync_ps
from kvmagent.contract import host as hc

log = logging.getLogger(__name__)


async def _connected_hosts(ctx: ApiContext, cluster_uuid: str) -> list[dict[str, Any]]:
    rows = await ctx.db.fetchall("SELECT * FROM Host WHERE clusterUuid=? AND status='Connected' ORDER BY createDate",
                                 (cluster_uuid,))
    return [dict(r) for r in rows]


async def _ps_attached(ctx: ApiContext, *, ps: dict[str, Any], cluster_uuid: str) -> None:
    if ps["type"] != "LocalStorage":
        return
    for host in await _connected_hosts(ctx, cluster_uuid):
        try:
            await init_local_storage(ctx.core, host, ps)
        except ApiError as e:
            raise OperationError(f"cannot attach primary storage[uuid:{ps['uuid']}] to cluster[uuid:{cluster_uuid}]: "
                                 f"host[uuid:{host['uuid']}, managementIp:{host['managementIp']}] failed to "
                                 f"initialise {ps['url']}: {e.details}", cause=e.body()["error"]) from e


async def _ps_detached(ctx: ApiContext, *, ps: dict[str, Any], cluster_uuid: str) -> None:
    async with ctx.db.write() as tx:
        await tx.execute(
            "DELETE FROM LocalStorageHostRef WHERE primaryStorageUuid=? AND hostUuid IN (SELECT uuid FROM Host "
            "WHERE clusterUuid=?) AND NOT EXISTS (SELECT 1 FROM LocalStorageResourceRef r WHERE "
            "r.primaryStorageUuid = LocalStorageHostRef.primaryStorageUuid AND r.hostUuid = "
            "LocalStorageHostRef.hostUuid)", (ps["uuid"], cluster_uuid))
        await sync_ps(tx, ps["uuid"])


async def _l2_attached(ctx: ApiContext, *, l2: dict[str, Any], cluster_uuid: str) -> None:
    tag = await ctx.db.fetchone("SELECT tag FROM SystemTag WHERE resourceUuid=? AND tag LIKE 'kvm::bridge::%' "
                                "LIMIT 1", (l2["uuid"],))
    bridge = l2_bridge({**l2, "tag": tag["tag"] if tag else None})
    for host in await _connected_hosts(ctx, cluster_uuid):
        try:
            await ctx.core.services["agents"].call(host, hc.CheckBridgeCmd(bridgeName=bridge))
        except ApiError as e:
            raise OperationError(f"cannot attach l2Network[uuid:{l2['uuid']}] to cluster[uuid:{cluster_uuid}]: "
                                 f"bridge {bridge} is missing on host[uuid:{host['uuid']}, managementIp:"
                                 f"{host['managementIp']}]: {e.details}", cause=e.body()["error"]) from e


attachments.listen("primaryStorage.attached", _ps_attached)
attachments.listen("primaryStorage.detached", _ps_detached)
attachments.listen("l2.attached", _l2_attached)
