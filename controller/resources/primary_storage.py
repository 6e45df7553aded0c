"""Local primary storage records: AddLocalPrimaryStorage, attach/detach to clusters, update, state, delete.

Attaching to a cluster initialises the storage on every Connected host of the cluster at once (its
``LocalStorageHostRef`` and capacity), as a host joining later gets it from its connect sequence; a host that
fails it fails the attach, which is undone. Detaching removes the refs of the cluster's hosts that hold
nothing there (:mod:`controller.resources.attachments`, listeners in ``controller/compute/attach.py``).

Rules (1.0): ``url`` is an absolute path; a primary storage and a cluster must be in the same zone; a
cluster accepts at most one LocalStorage; attaching twice or detaching what is not attached is refused
(400 SYS.1007). Deletion: refused (409 SYS.1006) while attached to a cluster or holding volumes, unless
``deleteMode=Enforcing``, which detaches and deletes (volumes keep their rows with
``primaryStorageUuid`` cleared). 1.0 ran its cascade extensions instead; refusing is the safer record.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, CreateMessage, Description, Name, Uuid, UuidDeleteMessage
from controller.api.registry import api, by_uuid
from controller.db.database import Tx
from controller.errors import InvalidArgument, OperationError
from controller.resources import attachments
from controller.resources.checks import require
from controller.resources.common import change_state_api, create_row, update_api
from controller.util import now_iso

PS_STATE_EVENTS = {"enable": "Enabled", "disable": "Disabled", "maintain": "Maintenance"}


class AddLocalPrimaryStorageMsg(CreateMessage):
    url: str = Field(min_length=1, max_length=2048, json_schema_extra={"pattern": "^/"})
    name: Name
    description: Description | None = None
    zoneUuid: Uuid
    type: Literal["LocalStorage"] = "LocalStorage"


class PrimaryStorageClusterMsg(ApiMessage):
    clusterUuid: Uuid
    primaryStorageUuid: Uuid


class ChangePrimaryStorageStateMsg(ApiMessage):
    uuid: Uuid
    stateEvent: Literal["enable", "disable", "maintain"]


@api("AddLocalPrimaryStorage", AddLocalPrimaryStorageMsg)
async def add_local_primary_storage(ctx: ApiContext, msg: AddLocalPrimaryStorageMsg) -> dict[str, Any]:
    """Record a local primary storage (a directory ``url`` on every host of the attached clusters)."""
    if not msg.url.startswith("/"):
        raise InvalidArgument(f"invalid field[url]: the url[{msg.url}] of a local primary storage must be an "
                              "absolute path starting with '/'")

    async def zone_exists(tx: Tx) -> None:
        await require(tx, "Zone", msg.zoneUuid, "zoneUuid")

    row = await create_row(ctx, "PrimaryStorage", "PrimaryStorageVO", msg, {
        "name": msg.name, "description": msg.description, "zoneUuid": msg.zoneUuid, "url": msg.url,
        "type": msg.type, "state": "Enabled", "status": "Connected", "mountPath": msg.url}, before=zone_exists)
    return {"inventory": await ctx.inventory("PrimaryStorage", row["uuid"])}


async def _check_attach(tx: Tx, ps: dict[str, Any], cluster: dict[str, Any]) -> None:
    if ps["zoneUuid"] != cluster["zoneUuid"]:
        raise InvalidArgument(f"primary storage[uuid:{ps['uuid']}] is in zone[uuid:{ps['zoneUuid']}] but "
                              f"cluster[uuid:{cluster['uuid']}] is in zone[uuid:{cluster['zoneUuid']}]; they "
                              "must be in the same zone")
    if await tx.fetchone("SELECT 1 FROM PrimaryStorageClusterRef WHERE primaryStorageUuid=? AND clusterUuid=?",
                         (ps["uuid"], cluster["uuid"])):
        raise InvalidArgument(f"primary storage[uuid:{ps['uuid']}] has been attached to "
                              f"cluster[uuid:{cluster['uuid']}]")
    if ps["type"] == "LocalStorage":
        other = await tx.fetchone(
            "SELECT p.uuid FROM PrimaryStorageClusterRef r JOIN PrimaryStorage p ON p.uuid=r.primaryStorageUuid "
            "WHERE r.clusterUuid=? AND p.type='LocalStorage'", (cluster["uuid"],))
        if other is not None:
            raise InvalidArgument(f"cluster[uuid:{cluster['uuid']}] already has local primary "
                                  f"storage[uuid:{other['uuid']}] attached; a cluster accepts only one "
                                  "LocalStorage")


@api("AttachPrimaryStorageToCluster", PrimaryStorageClusterMsg, queue=lambda m: m.primaryStorageUuid)
async def attach_primary_storage(ctx: ApiContext, msg: PrimaryStorageClusterMsg) -> dict[str, Any]:
    """Attach a primary storage to a cluster of the same zone."""
    async with ctx.db.write() as tx:
        ps = await require(tx, "PrimaryStorage", msg.primaryStorageUuid, "primaryStorageUuid")
        cluster = await require(tx, "Cluster", msg.clusterUuid, "clusterUuid")
        await _check_attach(tx, ps, cluster)
        await tx.insert("PrimaryStorageClusterRef", {"primaryStorageUuid": ps["uuid"],
                                                     "clusterUuid": cluster["uuid"], "createDate": now_iso()})
    try:  # every Connected host of the cluster initialises it now, as a host joining later would
        await attachments.run_attached(ctx, "primaryStorage.attached", ps=ps, cluster_uuid=cluster["uuid"])
    except BaseException:
        async with ctx.db.write() as tx:
            await tx.execute("DELETE FROM PrimaryStorageClusterRef WHERE primaryStorageUuid=? AND clusterUuid=?",
                             (ps["uuid"], cluster["uuid"]))
        await attachments.run_detached(ctx, "primaryStorage.detached", ps=ps, cluster_uuid=cluster["uuid"])
        raise
    return {"inventory": await ctx.inventory("PrimaryStorage", msg.primaryStorageUuid)}


@api("DetachPrimaryStorageFromCluster", PrimaryStorageClusterMsg, queue=lambda m: m.primaryStorageUuid)
async def detach_primary_storage(ctx: ApiContext, msg: PrimaryStorageClusterMsg) -> dict[str, Any]:
    """Detach a primary storage from a cluster."""
    async with ctx.db.write() as tx:
        ps = await require(tx, "PrimaryStorage", msg.primaryStorageUuid, "primaryStorageUuid")
        await require(tx, "Cluster", msg.clusterUuid, "clusterUuid")
        cur = await tx.execute("DELETE FROM PrimaryStorageClusterRef WHERE primaryStorageUuid=? AND clusterUuid=?",
                               (msg.primaryStorageUuid, msg.clusterUuid))
        if cur.rowcount == 0:
            raise InvalidArgument(f"primary storage[uuid:{msg.primaryStorageUuid}] is not attached to "
                                  f"cluster[uuid:{msg.clusterUuid}]")
    await attachments.run_detached(ctx, "primaryStorage.detached", ps=ps, cluster_uuid=msg.clusterUuid)
    return {"inventory": await ctx.inventory("PrimaryStorage", msg.primaryStorageUuid)}


update_api("PrimaryStorage", "Change a primary storage's name or description.")
change_state_api("PrimaryStorage", "enable / disable / maintain a primary storage (state Enabled, Disabled, "
                 "Maintenance).", model=ChangePrimaryStorageStateMsg, events=PS_STATE_EVENTS)


@api("DeletePrimaryStorage", UuidDeleteMessage, queue=by_uuid)
async def delete_primary_storage(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a primary storage record; refused while attached or holding volumes unless Enforcing."""
    async with ctx.db.write() as tx:
        ps = await tx.fetchone("SELECT * FROM PrimaryStorage WHERE uuid=?", (msg.uuid,))
        clusters = [r[0] for r in await tx.fetchall(
            "SELECT clusterUuid FROM PrimaryStorageClusterRef WHERE primaryStorageUuid=?", (msg.uuid,))]
        if msg.deleteMode == "Permissive":
            if clusters:
                raise OperationError(f"primary storage[uuid:{msg.uuid}] cannot be deleted for still being attached "
                                     f"to clusters{clusters}; detach it first or use deleteMode=Enforcing")
            vols = await tx.fetchone("SELECT COUNT(*) FROM Volume WHERE primaryStorageUuid=?", (msg.uuid,))
            if vols and vols[0]:
                raise OperationError(f"primary storage[uuid:{msg.uuid}] still holds {vols[0]} volume(s); delete "
                                     "them first or use deleteMode=Enforcing")
        await tx.execute("DELETE FROM PrimaryStorage WHERE uuid=?", (msg.uuid,))
    for cluster_uuid in clusters if ps is not None else []:  # Enforcing: the hosts let go of it (NFS: unmounted)
        await attachments.run_detached(ctx, "primaryStorage.detached", ps=dict(ps), cluster_uuid=cluster_uuid)
    return {}
