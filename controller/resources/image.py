"""Image records: UpdateImage, ChangeImageState, DeleteImage (AddImage is in ``controller/compute/images.py``).

DeleteImage follows ``image/deletionPolicy`` (Direct, Delay, Never; optionally only on ``backupStorageUuids``);
the work, RecoverImage and ExpungeImage are in ``controller/backup/deletion.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from controller.api.context import ApiContext
from controller.api.messages import UpdateMessage, Uuid, UuidDeleteMessage
from controller.api.registry import api, by_uuid
from controller.resources.common import change_state_api, update_fields


class UpdateImageMsg(UpdateMessage):
    guestOsType: str | None = None
    mediaType: Literal["RootVolumeTemplate", "DataVolumeTemplate", "ISO"] | None = None
    format: Literal["qcow2", "raw", "iso"] | None = None
    platform: Literal["Linux", "Windows", "WindowsVirtio", "Other", "Paravirtualization"] | None = None
    system: bool | None = None


class DeleteImageMsg(UuidDeleteMessage):
    backupStorageUuids: list[Uuid] | None = None


@api("UpdateImage", UpdateImageMsg, queue=by_uuid)
async def update_image(ctx: ApiContext, msg: UpdateImageMsg) -> dict[str, Any]:
    """Change an image's name, description, guest OS type, media type, format, platform or system flag."""
    values = msg.model_dump(include={"name", "description", "guestOsType", "mediaType", "format", "platform"})
    if msg.system is not None:
        values["system"] = int(msg.system)
    await update_fields(ctx, "Image", msg.uuid, values, vo="ImageVO")
    return {"inventory": await ctx.inventory("Image", msg.uuid)}


change_state_api("Image", "Enable or disable an image (a disabled image cannot be used to create VMs).")


@api("DeleteImage", DeleteImageMsg, queue=by_uuid)
async def delete_image(ctx: ApiContext, msg: DeleteImageMsg) -> dict[str, Any]:
    """Delete an image with ``image/deletionPolicy`` (an unknown uuid succeeds, as in 1.0)."""
    from controller.backup.deletion import delete  # the backup package imports this module's peers

    await delete(ctx, msg.uuid, msg.backupStorageUuids)
    return {}
