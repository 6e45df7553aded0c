"""SFTP backup storage: the add message, attach/detach to zones, update, state, delete.

``AddSftpBackupStorage`` and ``ReconnectBackupStorage`` (they connect over SSH) live in
``controller/backup/storage.py``; this module keeps the message and the hostname check they use.

Rules (1.0): a duplicate ``hostname`` is rejected; ``url`` is an absolute path; the password (and, as in
1.0's SftpBackupStorageInventory, the username) is never returned. Deleting a backup storage removes its
zone attachments and image references (foreign keys cascade), as 1.0 does.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, CreateMessage, Description, Name, Uuid
from controller.api.registry import api
from controller.errors import InvalidArgument
from controller.resources import attachments
from controller.resources.checks import require
from controller.resources.common import change_state_api, delete_api, update_api
from controller.tags.service import is_domain
from controller.util import now_iso


class AddSftpBackupStorageMsg(CreateMessage):
    hostname: str = Field(min_length=1, max_length=255)
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=1024)
    sshPort: int = Field(default=22, ge=1, le=65535)
    url: str = Field(min_length=1, max_length=2048)
    name: Name
    description: Description | None = None
    type: Literal["SftpBackupStorage"] = "SftpBackupStorage"


class BackupStorageZoneMsg(ApiMessage):
    zoneUuid: Uuid
    backupStorageUuid: Uuid


def check_hostname(hostname: str) -> None:
    try:
        ipaddress.IPv4Address(hostname)
        return
    except ValueError:
        pass
    if not is_domain(hostname):
        raise InvalidArgument(f"invalid field[hostname]: {hostname!r} is neither an IPv4 address nor a valid "
                              "host name")


@api("AttachBackupStorageToZone", BackupStorageZoneMsg, queue=lambda m: m.backupStorageUuid)
async def attach_backup_storage(ctx: ApiContext, msg: BackupStorageZoneMsg) -> dict[str, Any]:
    """Make a backup storage usable by a zone."""
    async with ctx.db.write() as tx:
        await require(tx, "BackupStorage", msg.backupStorageUuid, "backupStorageUuid")
        await require(tx, "Zone", msg.zoneUuid, "zoneUuid")
        if await tx.fetchone("SELECT 1 FROM BackupStorageZoneRef WHERE backupStorageUuid=? AND zoneUuid=?",
                             (msg.backupStorageUuid, msg.zoneUuid)):
            raise InvalidArgument(f"backup storage[uuid:{msg.backupStorageUuid}] has been attached to "
                                  f"zone[uuid:{msg.zoneUuid}]")
        await tx.insert("BackupStorageZoneRef", {"backupStorageUuid": msg.backupStorageUuid,
                                                 "zoneUuid": msg.zoneUuid, "createDate": now_iso()})
    try:
        await attachments.run_attached(ctx, "backupStorage.attached", bs_uuid=msg.backupStorageUuid,
                                       zone_uuid=msg.zoneUuid)
    except BaseException:
        async with ctx.db.write() as tx:
            await tx.execute("DELETE FROM BackupStorageZoneRef WHERE backupStorageUuid=? AND zoneUuid=?",
                             (msg.backupStorageUuid, msg.zoneUuid))
        raise
    return {"inventory": await ctx.inventory("BackupStorage", msg.backupStorageUuid)}


@api("DetachBackupStorageFromZone", BackupStorageZoneMsg, queue=lambda m: m.backupStorageUuid)
async def detach_backup_storage(ctx: ApiContext, msg: BackupStorageZoneMsg) -> dict[str, Any]:
    """Detach a backup storage from a zone."""
    async with ctx.db.write() as tx:
        await require(tx, "BackupStorage", msg.backupStorageUuid, "backupStorageUuid")
        await require(tx, "Zone", msg.zoneUuid, "zoneUuid")
        cur = await tx.execute("DELETE FROM BackupStorageZoneRef WHERE backupStorageUuid=? AND zoneUuid=?",
                               (msg.backupStorageUuid, msg.zoneUuid))
        if cur.rowcount == 0:
            raise InvalidArgument(f"backup storage[uuid:{msg.backupStorageUuid}] is not attached to "
                                  f"zone[uuid:{msg.zoneUuid}]")
    await attachments.run_detached(ctx, "backupStorage.detached", bs_uuid=msg.backupStorageUuid,
                                   zone_uuid=msg.zoneUuid)
    return {"inventory": await ctx.inventory("BackupStorage", msg.backupStorageUuid)}


update_api("BackupStorage", "Change a backup storage's name or description.")
change_state_api("BackupStorage", "Enable or disable a backup storage (a Disabled one gets no new images).")
delete_api("BackupStorage", "Delete a backup storage record with its zone attachments and image references.")
