"""Helpers of ``scripts/build-tiny-image``: the initramfs (cpio) and the boot media (disk, ISO)."""
