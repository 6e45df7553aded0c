"""AddImage moved to ``controller/backup/images.py`` (download to backup storage); re-exported here."""

from controller.backup.images import AddImageMsg, add_image

__all__ = ["AddImageMsg", "add_image"]
