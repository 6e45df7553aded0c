"""Shared primary storage endpoints (NFS and SharedMountPoint): thin adapters to :mod:`storage.shared` and the
agent's StorageService (the connected directory is then a storage of this host like a local one).

A SharedMountPoint url must lie inside the agent's ``storage_roots`` (as a local storage's); an NFS storage is
mounted only at ``<NFS_MOUNT_BASE>/prim-<psUuid>`` (the path is derived, never taken from the caller).
"""

from __future__ import annotations

import asyncio

from kvmagent.contract import sharedstorage as c
from kvmagent.contract.base import AgentError
from kvmagent.handlers.storage import HasStorage, cap, check_storage_root
from kvmagent.routing import handles
from storage import shared


def _nfs_path(cmd: c.ConnectSharedStorageCmd | c.UnmountSharedStorageCmd) -> str:
    want = c.nfs_mount_path(cmd.primaryStorageUuid)
    if cmd.mountPath.rstrip("/") != want:
        raise AgentError("AGENT.INVALID_REQUEST", f"invalid field[mountPath]: {cmd.mountPath!r}; an NFS primary "
                         f"storage is mounted at {want} only", status=400,
                         details={"field": "mountPath", "value": cmd.mountPath, "allowed": want})
    return want


@handles(c.ConnectSharedStorageCmd)
async def connect(ctx: HasStorage, cmd: c.ConnectSharedStorageCmd) -> c.ConnectSharedStorageReply:
    mounted = False
    if cmd.type == "NFS":
        path = _nfs_path(cmd)
        mounted = await shared.mount_nfs(cmd.url, path, options=cmd.mountOptions)
    else:
        path = cmd.mountPath
        if cmd.url.rstrip("/") != path.rstrip("/"):
            raise AgentError("AGENT.INVALID_REQUEST", f"invalid field[mountPath]: {path!r}; a SharedMountPoint "
                             f"storage is used at its url {cmd.url!r}", status=400,
                             details={"field": "mountPath", "value": path})
        roots = getattr(getattr(ctx, "config", None), "storage_roots", None)
        if roots is not None:
            check_storage_root(path, roots)
    root = await asyncio.to_thread(shared.check_shared_dir, path, cmd.primaryStorageUuid, cmd.hostUuid,
                                   create_marker=cmd.createMarker, kind=cmd.type)
    capacity = await ctx.storage.init(str(root), cmd.primaryStorageUuid, cmd.hostUuid)
    return c.ConnectSharedStorageReply(mounted=mounted, **cap(capacity))


@handles(c.UnmountSharedStorageCmd)
async def unmount(ctx: HasStorage, cmd: c.UnmountSharedStorageCmd) -> c.UnmountSharedStorageReply:
    return c.UnmountSharedStorageReply(unmounted=await shared.unmount_nfs(_nfs_path(cmd)))
