"""SFTP backup storage: connecting, image download and inspection, host cache sources."""

from controller.backup import cache, deletion, images, storage, system_images  # noqa: F401
