"""Where a host fetches an image into its cache from: a Ready copy on an SFTP backup storage.

:func:`cache_source` returns the keyword arguments of the agent's ``DownloadImageCmd`` that name the
source (``url``, ``md5``, ``size``). The url is ``sftp://user:password@host:port/<installPath>`` (user,
password and path percent-quoted) of a Ready ref, preferring a storage attached to the host's zone; a legacy
``file://`` image (added without backup storage: no refs, no md5) is fetched from its own url. An image that
was downloaded to backup storage but lost every ref (its storages were deleted) has no usable copy: it is
never fetched from its original url, which names a file on the controller or a remote server.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from controller import sealed
from controller.core import Controller
from controller.errors import OperationError


class NoUsableCopy(OperationError, LookupError):
    """The image cannot be fetched by a host: Deleted, or no Ready copy (409; still a LookupError for callers)."""


def sftp_url(bs: Any, install_path: str, holder: Any = None) -> str:
    """The agent-readable url of a file on an SFTP backup storage."""
    user, pw = quote(bs["username"], safe=""), quote(sealed.unseal(holder, bs["password"]) or "", safe="")
    return f"sftp://{user}:{pw}@{bs['hostname']}:{bs['sshPort']}{quote(install_path)}"


async def cache_source(core: Controller, image_row: Any, *, zone_uuid: str | None = None) -> dict[str, Any]:
    """``{"url", "md5", "size"}`` for ``DownloadImageCmd``; raises :class:`NoUsableCopy` (a LookupError and a
    409 API error) when no copy is usable (a Deleted image has none: no VM is created from it until recovered)."""
    if image_row["status"] == "Deleted":
        raise NoUsableCopy(f"image[uuid:{image_row['uuid']}] is Deleted; recover it with RecoverImage first")
    rows = await core.db.fetchall(
        "SELECT r.installPath, r.status, b.hostname, b.sshPort, b.username, b.password, "
        "EXISTS(SELECT 1 FROM BackupStorageZoneRef z WHERE z.backupStorageUuid = b.uuid AND z.zoneUuid = ?) "
        "AS inZone FROM ImageBackupStorageRef r JOIN BackupStorage b ON b.uuid = r.backupStorageUuid "
        "WHERE r.imageUuid = ? ORDER BY inZone DESC, (b.status = 'Connected') DESC, r.id",
        (zone_uuid, image_row["uuid"]))
    if not rows:
        if image_row["md5Sum"]:  # it was downloaded to backup storage: a legacy image never has an md5
            raise NoUsableCopy(f"image[uuid:{image_row['uuid']}] has no copy on any backup storage any more "
                               "(its backup storages were deleted)")
        if not core.config.allow_host_local_images:
            raise NoUsableCopy(f"image[uuid:{image_row['uuid']}] has no copy on backup storage and hosts fetch images "
                               "only from backup storage (allow_host_local_images is off)")
        return {"url": image_row["url"], "md5": None, "size": None}
    ready = [r for r in rows if r["status"] == "Ready"]
    if not ready:
        raise NoUsableCopy(f"image[uuid:{image_row['uuid']}] has no Ready copy on any backup storage")
    r = ready[0]
    return {"url": sftp_url(r, r["installPath"], core), "md5": image_row["md5Sum"], "size": image_row["actualSize"]}
