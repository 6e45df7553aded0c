"""Shared primary storage records (issue 15): AddNfsPrimaryStorage (1.0) and AddSharedMountPointPrimaryStorage
(ZStack's later type: a file system the operator mounted at the same path on every host). Attach, detach, update,
state, delete and capacity are the generic primary storage APIs (:mod:`.primary_storage`); what a host does with
the storage is in :mod:`controller.storage.shared` and ``controller/compute/shared_attach.py``.

Rules:
* NFS ``url`` is ``host:/absolute/path`` (1.0's agent checked it at mount time; here it is checked at once, 400
  SYS.1007 naming the field, the value and what is allowed); the hosts mount it at
  ``/opt/zstack/nfsprimarystorage/prim-<uuid>`` (the inventory's ``mountPath``).
* SharedMountPoint ``url`` is an absolute path (not ``/``) without ``..``, the same directory on every host.
* The same url twice in one zone is refused (1.0: SYS.1007 "there has been a nfs primary storage having url as X in
  zone[uuid:Z]"), for both types.
* The record starts with zero capacity; the first host that connects it reports the file system's figures.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name, Uuid
from controller.api.registry import api
from controller.db.database import Tx
from controller.errors import InvalidArgument
from controller.resources.checks import require
from controller.resources.common import create_row
from kvmagent.contract.sharedstorage import nfs_mount_path
from zsutil import nfsurl

SMP_URL_ALLOWED = ("an absolute directory path other than '/', without '.' or '..' segments, spaces or control "
                   "characters, mounted at that path on every host")
#: the same rule in the API schema and in the check
SMP_URL_PATTERN = rf"^(?:/{nfsurl.segment(dot=False)})+/?$"
_SMP_URL = re.compile(SMP_URL_PATTERN)


class AddNfsPrimaryStorageMsg(CreateMessage):
    url: str = Field(min_length=1, max_length=2048, json_schema_extra={"pattern": nfsurl.PATTERN})
    name: Name
    description: Description | None = None
    zoneUuid: Uuid
    type: Literal["NFS"] = "NFS"


class AddSharedMountPointPrimaryStorageMsg(CreateMessage):
    url: str = Field(min_length=1, max_length=2048, json_schema_extra={"pattern": SMP_URL_PATTERN})
    name: Name
    description: Description | None = None
    zoneUuid: Uuid
    type: Literal["SharedMountPoint"] = "SharedMountPoint"


def check_smp_url(url: str) -> str:
    if not _SMP_URL.fullmatch(url) or os.path.normpath(url) == "/":
        raise InvalidArgument(f"invalid field[url]: the url[{url}] of a SharedMountPoint primary storage is not "
                              f"allowed; allowed: {SMP_URL_ALLOWED}")
    return os.path.normpath(url)


def check_nfs_url(url: str) -> str:
    try:
        return str(nfsurl.parse(url))
    except ValueError:
        raise InvalidArgument(f"invalid field[url]: the url[{url}] of an NFS primary storage is not allowed; "
                              f"allowed: {nfsurl.ALLOWED}, e.g. 192.168.0.220:/storage/nfs") from None


async def _add(ctx: ApiContext, msg: AddNfsPrimaryStorageMsg | AddSharedMountPointPrimaryStorageMsg,
               url: str) -> dict[str, Any]:
    async def before(tx: Tx) -> None:
        await require(tx, "Zone", msg.zoneUuid, "zoneUuid")
        dup = await tx.fetchone("SELECT uuid FROM PrimaryStorage WHERE zoneUuid=? AND url=? AND type IN "
                                "('NFS', 'SharedMountPoint')", (msg.zoneUuid, url))
        if dup is not None:
            raise InvalidArgument(f"invalid field[url]: there has been a {msg.type} primary storage[uuid:"
                                  f"{dup['uuid']}] having url as {url} in zone[uuid:{msg.zoneUuid}]")

    async def after(tx: Tx, row: dict[str, Any]) -> None:
        if msg.type == "NFS":
            await tx.update("PrimaryStorage", {"uuid": row["uuid"]}, {"mountPath": nfs_mount_path(row["uuid"])})

    row = await create_row(ctx, "PrimaryStorage", "PrimaryStorageVO", msg, {
        "name": msg.name, "description": msg.description, "zoneUuid": msg.zoneUuid, "url": url, "type": msg.type,
        "state": "Enabled", "status": "Connected", "mountPath": url}, before=before, after=after)
    return {"inventory": await ctx.inventory("PrimaryStorage", row["uuid"])}


@api("AddNfsPrimaryStorage", AddNfsPrimaryStorageMsg)
async def add_nfs_primary_storage(ctx: ApiContext, msg: AddNfsPrimaryStorageMsg) -> dict[str, Any]:
    """Record an NFS primary storage (``url`` host:/path); hosts of the clusters it is attached to mount it."""
    return await _add(ctx, msg, check_nfs_url(msg.url))


@api("AddSharedMountPointPrimaryStorage", AddSharedMountPointPrimaryStorageMsg)
async def add_smp_primary_storage(ctx: ApiContext, msg: AddSharedMountPointPrimaryStorageMsg) -> dict[str, Any]:
    """Record a SharedMountPoint primary storage (``url``: a shared file system mounted there on every host)."""
    return await _add(ctx, msg, check_smp_url(msg.url))
