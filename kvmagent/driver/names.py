"""The one place where device names are derived from ids (STYLE.md: identity in models, not in names).

Names are derived, never parsed back: to find a VM's NIC, look it up by MAC in the domain XML.
"""

from __future__ import annotations

from kvmagent.contract.names import nic_tap_name as nic_device_name

__all__ = ["CDROM_TARGET", "DISK_LETTERS", "disk_target", "nic_device_name"]

#: Target letters by device id; ``c`` is skipped because ``hdc`` is the CD-ROM (ZStack 1.0's table).
DISK_LETTERS = "abdefghijklmnopqrstuvwxyz"


def disk_target(device_id: int, paravirtual: bool) -> tuple[str, str]:
    """``(target dev, bus)`` of a disk: ``vd<x>``/virtio for paravirtual guests, else ``sd<x>``/sata."""
    if not 0 <= device_id < len(DISK_LETTERS):
        raise ValueError(f"disk deviceId {device_id} out of range 0..{len(DISK_LETTERS) - 1}")
    letter = DISK_LETTERS[device_id]
    return (f"vd{letter}", "virtio") if paravirtual else (f"sd{letter}", "sata")


CDROM_TARGET = ("hdc", "ide")
