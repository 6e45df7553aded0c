"""AddImage, minimal for issue 4: the image RECORD only (a ``file://`` url that every host can read).

NOT done here (issue 5): the download to backup storage, backup storage refs and capacity, md5 checks,
http/sftp urls. The image is Ready at once; hosts fetch it from ``url`` into their image cache when a VM
is created from it (``/localstorage/image/download``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name, Uuid
from controller.api.registry import api
from controller.errors import InvalidArgument
from controller.resources.common import create_row


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


@api("AddImage", AddImageMsg, job=True)
async def add_image(ctx: ApiContext, msg: AddImageMsg) -> dict[str, Any]:
    """Record an image whose ``file://`` url hosts read directly (backup storage download: issue 5)."""
    if not msg.url.startswith("file:///"):
        raise InvalidArgument(f"invalid field[url]: {msg.url!r}; only file:///<absolute path> urls are "
                              "supported until images are downloaded to backup storage")
    fmt = "iso" if msg.mediaType == "ISO" else msg.format
    row = await create_row(ctx, "Image", "ImageVO", msg, {
        "name": msg.name, "description": msg.description, "url": msg.url, "format": fmt,
        "mediaType": msg.mediaType, "platform": msg.platform, "guestOsType": msg.guestOsType,
        "system": int(msg.system), "status": "Ready", "state": "Enabled"})
    return {"inventory": await ctx.inventory("Image", row["uuid"])}
