"""``UpdateSftpBackupStorage`` and ``ScanBackupStorage`` (1.0 names).

UpdateSftpBackupStorage (uuid, name, description, hostname, username, password, sshPort):

* name/description are written as given.
* New connection details are re-verified BEFORE they are stored: one SSH/SFTP login with the new
  endpoint (``controller.backup.sftp.connect``, the single place where SSH to a backup storage is opened: the
  server must present the recorded host key, or the one ``acceptHostKeyFingerprint`` names, before the
  password is sent; a new hostname is a first contact whose key is recorded), ``url`` created there, capacity
  measured. A failed login is 409 SYS.1006 naming the host and the reason, and nothing is written; on success
  the storage is Connected with the new capacity and host key, the password stored sealed.
* Changing ``hostname`` needs ``password`` in the same call: the stored password is never sent to an address
  it was not given for. A duplicate hostname or an invalid one is 400 SYS.1007 (as AddSftpBackupStorage).
* The password is never returned (the inventory hides it).

ScanBackupStorage (backupStorageUuid): 1.0's SFTP backup storage had no image scan behind this API; here it
logs in, checks ``url`` and re-measures the capacity (Connected with fresh figures, or Disconnected and the
error), and answers the storage's inventory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from controller import sealed, sshkeys
from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, UpdateMessage, Uuid
from controller.api.registry import api, by_uuid
from controller.backup.sftp import BackupStorageError, Endpoint, prepare
from controller.errors import InvalidArgument
from controller.resources.backup_storage import check_hostname
from controller.util import now_iso


class UpdateSftpBackupStorageMsg(UpdateMessage):
    hostname: str | None = Field(default=None, min_length=1, max_length=255)
    username: str | None = Field(default=None, min_length=1, max_length=255)
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    sshPort: int | None = Field(default=None, ge=1, le=65535)
    #: accept a changed SSH host key whose fingerprint (SHA256:...) was verified on the storage host
    acceptHostKeyFingerprint: str | None = Field(default=None, max_length=100)


class ScanBackupStorageMsg(ApiMessage):
    backupStorageUuid: Uuid


@api("UpdateSftpBackupStorage", UpdateSftpBackupStorageMsg, job=True, queue=by_uuid)
async def update_sftp_backup_storage(ctx: ApiContext, msg: UpdateSftpBackupStorageMsg) -> dict[str, Any]:
    """Update an SFTP backup storage; new hostname/username/password/sshPort are verified by logging in first."""
    sshkeys.validate_fingerprint(msg.acceptHostKeyFingerprint)
    row = await ctx.require("BackupStorage", msg.uuid, "uuid")
    if row["type"] != "SftpBackupStorage":
        raise InvalidArgument(f"invalid field[uuid]: backup storage[uuid:{msg.uuid}] is {row['type']}, not "
                              "SftpBackupStorage")
    values: dict[str, Any] = {k: v for k, v in (("name", msg.name), ("description", msg.description))
                              if v is not None}
    conn = sshkeys.credential_changes(msg, row, "hostname", check_hostname)
    if msg.hostname is not None and msg.hostname != row["hostname"]:
        dup = await ctx.db.fetchone("SELECT uuid FROM BackupStorage WHERE hostname=? AND uuid<>?",
                                    (msg.hostname, msg.uuid))
        if dup is not None:
            raise InvalidArgument(f"duplicate backup storage. There has been a sftp backup storage[uuid:{dup['uuid']}"
                                  f", hostname:{msg.hostname}] existing")
    if conn:
        moved = "hostname" in conn and conn["hostname"] != row["hostname"]
        ep = Endpoint.of({**dict(row), **conn, "password": conn.get("password", row["password"])}, ctx)
        # a new hostname is another server: first contact (its key is recorded); else the recorded key is pinned
        ep = dataclasses.replace(ep, host_key=None if moved else ep.host_key, accept=msg.acceptHostKeyFingerprint)
        total, avail, seen = await prepare(ep, row["url"])   # login + url + capacity, or 409
        values.update(conn, status="Connected", totalCapacity=total, availableCapacity=avail,
                      sshHostKey=seen.key, sshHostKeyFingerprint=seen.fingerprint)
        if "password" in values:
            values["password"] = sealed.seal(ctx, values["password"])
    if values:
        async with ctx.db.write() as tx:
            if "hostname" in values and await tx.fetchone("SELECT 1 FROM BackupStorage WHERE hostname=? AND uuid<>?",
                                                          (values["hostname"], msg.uuid)):
                raise InvalidArgument(f"duplicate backup storage: hostname {values['hostname']} is taken")
            await tx.update("BackupStorage", {"uuid": msg.uuid}, {**values, "lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("SftpBackupStorage", msg.uuid)}


@api("ScanBackupStorage", ScanBackupStorageMsg, job=True, queue=lambda m: m.backupStorageUuid)
async def scan_backup_storage(ctx: ApiContext, msg: ScanBackupStorageMsg) -> dict[str, Any]:
    """Log in to the backup storage, check its directory and re-measure its capacity."""
    row = await ctx.require("BackupStorage", msg.backupStorageUuid, "backupStorageUuid")
    try:
        total, avail, _ = await prepare(Endpoint.of(row, ctx), row["url"])
    except BackupStorageError:
        async with ctx.db.write() as tx:
            await tx.update("BackupStorage", {"uuid": row["uuid"]}, {"status": "Disconnected",
                                                                     "lastOpDate": now_iso()})
        raise
    async with ctx.db.write() as tx:
        await tx.update("BackupStorage", {"uuid": row["uuid"]}, {
            "status": "Connected", "totalCapacity": total, "availableCapacity": avail, "lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("BackupStorage", row["uuid"])}
