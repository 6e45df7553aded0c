"""AddSftpBackupStorage and ReconnectBackupStorage: real SSH/SFTP connections to the storage host.

AddSftpBackupStorage logs in with the given username/password (sshPort, default 22), creates ``url`` (an
absolute path) and measures its capacity before anything is written: a wrong password or an unreachable
host fails the API with a clear error and leaves NO row. A duplicate hostname is rejected (1.0). The
password is stored sealed (``controller.sealed``; image downloads need it), never returned or logged.
ReconnectBackupStorage reruns the same
check: ``Connected`` with fresh capacity, or ``Disconnected`` and the error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from controller import sealed, sshkeys
from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.backup import system_images
from controller.backup.sftp import Endpoint, prepare
from controller.core import Controller
from controller.db.database import Tx
from controller.errors import ApiError, InvalidArgument
from controller.resources.backup_storage import AddSftpBackupStorageMsg, check_hostname
from controller.resources.common import create_row
from controller.util import now_iso


def _duplicate(uuid: str, hostname: str) -> InvalidArgument:
    return InvalidArgument(f"duplicate backup storage. There has been a sftp backup storage[uuid:{uuid}, "
                           f"hostname:{hostname}] existing")


@api("AddSftpBackupStorage", AddSftpBackupStorageMsg)
async def add_sftp_backup_storage(ctx: ApiContext, msg: AddSftpBackupStorageMsg) -> dict[str, Any]:
    """Connect to the SFTP server, create ``url``, measure capacity, then record it as Connected."""
    check_hostname(msg.hostname)
    if not msg.url.startswith("/"):
        raise InvalidArgument(f"invalid field[url]: the url[{msg.url}] of a sftp backup storage must be an "
                              "absolute path starting with '/'")
    dup = await ctx.db.fetchone("SELECT uuid FROM BackupStorage WHERE hostname=?", (msg.hostname,))
    if dup is not None:
        raise _duplicate(dup["uuid"], msg.hostname)
    total, avail, seen = await prepare(Endpoint(msg.hostname, msg.sshPort, msg.username, msg.password), msg.url)

    async def unique_hostname(tx: Tx) -> None:
        dup = await tx.fetchone("SELECT uuid FROM BackupStorage WHERE hostname=?", (msg.hostname,))
        if dup is not None:
            raise _duplicate(dup["uuid"], msg.hostname)

    row = await create_row(ctx, "BackupStorage", "BackupStorageVO", msg, {
        "name": msg.name, "description": msg.description, "url": msg.url, "type": msg.type,
        "state": "Enabled", "status": "Connected", "hostname": msg.hostname, "username": msg.username,
        "password": sealed.seal(ctx, msg.password), "sshPort": msg.sshPort, "totalCapacity": total,
        "availableCapacity": avail, "sshHostKey": seen.key, "sshHostKeyFingerprint": seen.fingerprint},
        before=unique_hostname)
    system_images.schedule(ctx.core)
    return {"inventory": await ctx.inventory("SftpBackupStorage", row["uuid"])}


class ReconnectBackupStorageMsg(ApiMessage):
    uuid: Uuid
    #: accept a changed SSH host key whose fingerprint (SHA256:...) was verified on the storage host
    acceptHostKeyFingerprint: str | None = Field(default=None, max_length=100)


async def _set_status(ctx: ApiContext | Controller, uuid: str, values: dict[str, Any]) -> None:
    async with ctx.db.write() as tx:
        await tx.update("BackupStorage", {"uuid": uuid}, {**values, "lastOpDate": now_iso()})


@api("ReconnectBackupStorage", ReconnectBackupStorageMsg, queue=lambda m: m.uuid,
     aliases=("ReconnectSftpBackupStorage",))
async def reconnect_backup_storage(ctx: ApiContext, msg: ReconnectBackupStorageMsg) -> dict[str, Any]:
    """Reconnect: Connecting → Connected (capacity refreshed) or Disconnected with the error raised."""
    sshkeys.validate_fingerprint(msg.acceptHostKeyFingerprint)
    row = await ctx.require("BackupStorage", msg.uuid, "uuid")
    await _set_status(ctx, msg.uuid, {"status": "Connecting"})
    try:
        ep = dataclasses.replace(Endpoint.of(row, ctx), accept=msg.acceptHostKeyFingerprint)
        total, avail, seen = await prepare(ep, row["url"])
    except ApiError:
        await _set_status(ctx, msg.uuid, {"status": "Disconnected"})
        raise
    await _set_status(ctx, msg.uuid, {"status": "Connected", "totalCapacity": total, "availableCapacity": avail,
                                      "sshHostKey": seen.key, "sshHostKeyFingerprint": seen.fingerprint})
    system_images.schedule(ctx.core)
    return {"inventory": await ctx.inventory("BackupStorage", msg.uuid)}


async def refresh_capacity(ctx: ApiContext | Controller, bs: dict[str, Any]) -> None:
    """Re-measure a storage's capacity after its content changed (best effort: errors are ignored)."""
    try:
        total, avail, _ = await prepare(Endpoint.of(bs, ctx), bs["url"])
    except ApiError:
        return
    await _set_status(ctx, bs["uuid"], {"totalCapacity": total, "availableCapacity": avail})
