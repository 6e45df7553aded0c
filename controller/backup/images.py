"""AddImage: download a url to SFTP backup storage, inspect it there, record md5/size/refs.

Steps (the API waits for them as a job): check the message → pick the backup storages → ONE transaction
writes the image (``Downloading``) and one ImageBackupStorageRef per storage (``Downloading``, installPath
``<bs url>/images/<uuid>/<uuid>.<ext>``) → the url is streamed once into every storage over SFTP (md5 and
size on the fly; ``downloadProgress`` in percent written at most once a second) → ``qemu-img info`` runs on
each storage host (see ``inspect.py``) → image and refs ``Ready`` with size (virtual size), actualSize and
md5Sum; storage capacities re-measured. Any failure (including cancellation) deletes the image row, its
refs and the files on every storage, and fails the API with the reason, as 1.0 does.

Backup storages (1.0: ``backupStorageUuids`` is mandatory and only Connected+Enabled ones are used; none
usable → SYS.1006). Deviations, documented: when none are given and exactly one backup storage exists it is
used; when none are given and NO backup storage exists the API fails (409: hosts fetch images only from backup
storage), unless the controller setting ``allow_host_local_images`` (labs and tests) lets a ``file://`` url be
recorded as a legacy image that hosts read directly. ``file://`` urls must lie inside ``image_import_dirs`` and
http(s) urls must not reach loopback/link-local/metadata addresses, also after redirects (``urlcheck``).
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any, Literal

import asyncssh
from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name, Uuid
from controller.api.registry import api
from controller.backup import transfer, urlcheck
from controller.backup.inspect import inspect_remote
from controller.backup.sftp import BackupStorageError, Endpoint, connect, remove_tree
from controller.backup.storage import refresh_capacity
from controller.errors import InvalidArgument, OperationError
from controller.resources.common import create_row
from controller.util import now_iso

PROGRESS_INTERVAL = 1.0


class AddImageMsg(CreateMessage):
    name: Name
    description: Description | None = None
    url: str = Field(min_length=1, max_length=2048)
    format: Literal["qcow2", "raw", "iso"]
    mediaType: Literal["RootVolumeTemplate", "DataVolumeTemplate", "ISO"] = "RootVolumeTemplate"
    platform: Literal["Linux", "Windows", "WindowsVirtio", "Other", "Paravirtualization"] = "Linux"
    guestOsType: str | None = None
    system: bool = False
    backupStorageUuids: list[Uuid] | None = None


async def _storages(ctx: ApiContext, wanted: list[str] | None) -> list[dict[str, Any]]:
    """The Connected+Enabled backup storages to use (1.0's rule), [] for a legacy image."""
    if not wanted:
        rows = await ctx.db.fetchall("SELECT uuid FROM BackupStorage")
        if len(rows) > 1:
            raise InvalidArgument("invalid field[backupStorageUuids]: the field is mandatory when more than one "
                                  "backup storage exists")
        wanted = [r["uuid"] for r in rows]
        if not wanted:
            return []
    marks = ",".join("?" * len(wanted))
    rows = await ctx.db.fetchall(f"SELECT * FROM BackupStorage WHERE uuid IN ({marks}) AND status='Connected' "
                                 "AND state='Enabled' ORDER BY createDate", tuple(wanted))
    if not rows:
        raise OperationError(f"no backup storage specified in uuids{wanted} is available for adding this image; "
                             "they are not in status Connected or not in state Enabled, or the uuids are invalid "
                             "backup storage uuids")
    return [dict(r) for r in rows]


def _row(msg: AddImageMsg, fmt: str, status: str) -> dict[str, Any]:
    return {"name": msg.name, "description": msg.description, "url": msg.url, "format": fmt,
            "mediaType": msg.mediaType, "platform": msg.platform, "guestOsType": msg.guestOsType,
            "system": int(msg.system), "status": status, "state": "Enabled"}


@api("AddImage", AddImageMsg, job=True)
async def add_image(ctx: ApiContext, msg: AddImageMsg) -> dict[str, Any]:
    """Add an image: downloaded to backup storage and inspected, or (no storage at all) a legacy record."""
    transfer.check_url(msg.url, local_file=False)
    if msg.url.startswith("file:"):
        urlcheck.check_import_path(msg.url, ctx.core.config.image_import_dirs)
    else:
        await urlcheck.check_http_target(msg.url, ctx.core.config.image_url_allowed_networks)
    fmt = "iso" if msg.mediaType == "ISO" else msg.format
    storages = await _storages(ctx, msg.backupStorageUuids)
    if storages:
        transfer.check_url(msg.url)
    if not storages:
        if not ctx.core.config.allow_host_local_images:
            raise OperationError("invalid field[backupStorageUuids]: no backup storage exists and hosts fetch images "
                                 f"only from backup storage; add one (AddSftpBackupStorage) to add {msg.url}")
        if not msg.url.startswith("file:///"):
            raise InvalidArgument("invalid field[backupStorageUuids]: no backup storage exists; add one "
                                  f"(AddSftpBackupStorage) to download {msg.url}")
        row = await create_row(ctx, "Image", "ImageVO", msg, _row(msg, fmt, "Ready"))
        return {"inventory": await ctx.inventory("Image", row["uuid"])}
    paths: dict[str, str] = {}

    async def refs(tx: Any, row: dict[str, Any]) -> None:
        for bs in storages:
            path = f"{bs['url'].rstrip('/')}/images/{row['uuid']}/{row['uuid']}.{fmt}"
            paths[bs["uuid"]] = path
            await tx.insert("ImageBackupStorageRef", {
                "imageUuid": row["uuid"], "backupStorageUuid": bs["uuid"], "installPath": path,
                "status": "Downloading", "createDate": now_iso(), "lastOpDate": now_iso()})

    row = await create_row(ctx, "Image", "ImageVO", msg, {**_row(msg, fmt, "Downloading"), "downloadProgress": 0},
                           after=refs)
    try:
        await _download(ctx, row["uuid"], msg.url, fmt, storages, paths)
    except BaseException:
        await _roll_back(ctx, row["uuid"], storages, paths)
        raise
    for bs in storages:
        await refresh_capacity(ctx, bs)
    return {"inventory": await ctx.inventory("Image", row["uuid"])}


async def _download(ctx: ApiContext, uuid: str, url: str, fmt: str, storages: list[dict[str, Any]],
                    paths: dict[str, str]) -> None:
    """Stream to every storage, inspect on every storage, then mark image and refs Ready."""
    last = 0.0

    async def progress(done: int, total: int | None) -> None:
        nonlocal last
        if total and time.monotonic() - last >= PROGRESS_INTERVAL:
            last = time.monotonic()
            async with ctx.db.write() as tx:
                await tx.update("Image", {"uuid": uuid}, {"downloadProgress": done * 100 // total})

    async with AsyncExitStack() as stack:
        sessions: list[tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient, str]] = []
        files = []
        for bs in storages:
            conn = await stack.enter_async_context(connect(Endpoint.of(bs, ctx)))
            sftp = await stack.enter_async_context(conn.start_sftp_client())
            path = paths[bs["uuid"]]
            files.append(await _create_file(stack, sftp, bs, path))
            sessions.append((conn, sftp, path))
        copied = await transfer.copy(url, files, progress, allowed_nets=ctx.core.config.image_url_allowed_networks)
        for f in files:
            await f.close()
        found = [await inspect_remote(conn, sftp, path, url=url, declared=fmt) for conn, sftp, path in sessions]
    size = found[0].virtual_size if found[0].format == "qcow2" else copied.size
    async with ctx.db.write() as tx:
        await tx.update("Image", {"uuid": uuid}, {
            "status": "Ready", "size": size, "actualSize": copied.size, "md5Sum": copied.md5,
            "downloadProgress": 100, "lastOpDate": now_iso()})
        await tx.execute("UPDATE ImageBackupStorageRef SET status='Ready', lastOpDate=? WHERE imageUuid=?",
                         (now_iso(), uuid))


async def _create_file(stack: AsyncExitStack, sftp: asyncssh.SFTPClient, bs: dict[str, Any],
                       path: str) -> asyncssh.SFTPClientFile:
    """Create ``path`` (and its directory) on the storage for writing, closed with ``stack``; a storage that
    refuses (its url is no directory any more, a read-only or full file system) is a BackupStorageError."""
    try:
        await sftp.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return await stack.enter_async_context(sftp.open(path, "wb"))
    except (asyncssh.SFTPError, OSError) as e:
        raise BackupStorageError(f"cannot create {path} on sftp backup storage[uuid:{bs['uuid']}] "
                                 f"{bs['hostname']}: {e}") from e


async def _roll_back(ctx: ApiContext, uuid: str, storages: list[dict[str, Any]], paths: dict[str, str]) -> None:
    """Delete the files on every storage and the image row (refs cascade); errors here are swallowed."""
    for bs in storages:
        try:
            await remove_tree(Endpoint.of(bs, ctx), paths[bs["uuid"]].rsplit("/", 1)[0])
        except Exception:
            pass
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM Image WHERE uuid=?", (uuid,))

