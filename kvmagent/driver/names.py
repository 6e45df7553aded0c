"""The one place where device names are derived from ids (STYLE.md: identity in models, not in names).

Names are derived, never parsed back: to find a VM's NIC, look it up by MAC in the domain XML.
"""

from __future__ import annotations

#: Target letters by device id; ``c`` is skipped because ``hdc`` is the CD-ROM (ZStack 1.0's table).
DISK_LETTERS = "abdefghijklmnopqrstuvwxyz"


def nic_device_name(internal_id: int, device_id: int) -> str:
    """Host-side tap name of a VM NIC: ``vnic<internalId>.<deviceId>`` (at most 15 characters)."""
    name = f"vnic{internal_id}.{device_id}"
    if len(name) > 15:
        raise ValueError(f"NIC name {name!r} longer than 15 characters: internalId {internal_id} too large")
    return name


def disk_target(device_id: int, paravirtual: bool) -> tuple[str, str]:
    """``(target dev, bus)`` of a disk: ``vd<x>``/virtio for paravirtual guests, else ``sd<x>``/sata."""
    if not 0 <= device_id < len(DISK_LETTERS):
        raise ValueError(f"disk deviceId {device_id} out of range 0..{len(DISK_LETTERS) - 1}")
    letter = DISK_LETTERS[device_id]
    return (f"vd{letter}", "virtio") if paravirtual else (f"sd{letter}", "sata")


CDROM_TARGET = ("hdc", "ide")
