"""Shared primary storage (NFS, SharedMountPoint) on the hosts of the clusters it is attached to (issue 15).

* Attached to a cluster: every Connected host connects it now (NFS mount, same-file-system check;
  :func:`controller.storage.shared.connect_host`); the first host that fails fails the attach, which is undone
  (the hosts already connected are disconnected again, NFS unmounted).
* Detached: the cluster's hosts forget it (NFS: unmounted on the Connected ones; a failed unmount is logged, the
  detach succeeds, as in 1.0).
* A host connecting (AddKvmHost, ReconnectHost, auto-reconnect) connects every shared storage attached to its
  cluster inside its connect sequence (``controller/compute/connect.py``); a failure fails the host's connect
  with an error naming the storage's url and the host, as 1.0 did for a failed NFS mount.
"""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.resources import attachments
from controller.storage import shared


async def _hosts(ctx: ApiContext, cluster_uuid: str, *, connected: bool) -> list[dict[str, Any]]:
    rows = await ctx.db.fetchall("SELECT * FROM Host WHERE clusterUuid=?" + (" AND status='Connected'" if connected
                                 else "") + " ORDER BY createDate", (cluster_uuid,))
    return [dict(r) for r in rows]


async def _attached(ctx: ApiContext, *, ps: dict[str, Any], cluster_uuid: str) -> None:
    if not shared.is_shared_type(ps["type"]):
        return
    for host in await _hosts(ctx, cluster_uuid, connected=True):
        await shared.connect_host(ctx.core, host, ps)


async def _detached(ctx: ApiContext, *, ps: dict[str, Any], cluster_uuid: str) -> None:
    if not shared.is_shared_type(ps["type"]):
        return
    await shared.disconnect_hosts(ctx.core, ps, await _hosts(ctx, cluster_uuid, connected=False))


attachments.listen("primaryStorage.attached", _attached)
attachments.listen("primaryStorage.detached", _detached)
