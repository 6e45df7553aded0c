"""Names both sides of the wire derive from ids: the controller stores a NIC's ``internalName`` and the agent
names the host-side tap after it, so both must come from this one function."""

from __future__ import annotations

#: Linux interface names are at most 15 characters (IFNAMSIZ - 1).
IFNAME_MAX = 15


def nic_tap_name(internal_id: int, device_id: int) -> str:
    """Host-side tap name of a VM NIC: ``vnic<internalId>.<deviceId>`` (at most 15 characters)."""
    name = f"vnic{internal_id}.{device_id}"
    if len(name) > IFNAME_MAX:
        raise ValueError(f"NIC name {name!r} longer than {IFNAME_MAX} characters: internalId {internal_id} too large")
    return name
