"""Names and addresses derived from ids, in ONE place (STYLE: identity in models, not in names).

Every kernel object flatnet creates for an L3 network is named by :func:`l3_names`, and every per-NIC
ebtables chain by :func:`nic_chain`. Names are derived, looked up and compared, never parsed back into ids.
Linux limits interface names to 15 characters, so interface names carry a 12-hex-digit digest of the L3
uuid (a collision needs ~16 million L3 networks on one host).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

IFNAME_MAX = 15
EBT_CHAIN_MAX = 31
METADATA_IP = "169.254.169.254"


@dataclass(frozen=True)
class L3Names:
    """Kernel names of one L3 network's DHCP/metadata plumbing on a host."""

    netns: str  # network namespace holding dnsmasq and the metadata sockets
    outer: str  # veth end enslaved to the L2 bridge (in the host namespace)
    inner: str  # veth end inside ``netns``, carrying the DHCP server IP and 169.254.169.254
    key: str  # directory name under the state dir


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def l3_names(l3_uuid: str) -> L3Names:
    """The names for ``l3_uuid``; the same on every host and every agent restart."""
    if not l3_uuid:
        raise ValueError("l3NetworkUuid must not be empty")
    d = _digest(l3_uuid, 12)
    return L3Names(netns=f"zsfn-{d}", outer=f"zfo{d}", inner=f"zfi{d}", key=d)


def dhcp_mac(l3_uuid: str) -> str:
    """The DHCP/metadata interface MAC of an L3 network: locally administered, unicast, the same on every
    host (so a migrated guest's ARP entry for the DHCP IP stays valid, testbed pitfall 3)."""
    d = hashlib.sha256(("mac:" + l3_uuid).encode()).digest()
    octets = [0x02 | (d[0] & 0xFC), d[1], d[2], d[3], d[4], d[5]]
    return ":".join(f"{o:02x}" for o in octets)


def nic_tag(mac: str) -> str:
    """dnsmasq tag of a NIC (the MAC without colons, as 1.0 does)."""
    return "n" + mac.lower().replace(":", "")


def nic_chain(tap: str) -> str:
    """The anti-spoofing ebtables chain of the VM NIC whose tap is ``tap``."""
    if not tap or len(tap) > IFNAME_MAX:
        raise ValueError(f"tapName {tap!r} is not a valid interface name (1..{IFNAME_MAX} characters)")
    return f"zsas-{tap}"


NIC_MAC_PREFIX = "zsmac-"


def nic_mac_chain(tap: str) -> str:
    """The ``nat``-table chain that drops frames from ``tap`` with another source MAC."""
    if not tap or len(tap) > IFNAME_MAX:
        raise ValueError(f"tapName {tap!r} is not a valid interface name (1..{IFNAME_MAX} characters)")
    return f"{NIC_MAC_PREFIX}{tap}"


def uplink_chain(uplink: str) -> str:
    """The ebtables chain holding the host-local rules for a bridge's physical uplink."""
    if not uplink or len(uplink) > IFNAME_MAX:
        raise ValueError(f"physicalInterface {uplink!r} is not a valid interface name")
    return f"zsup-{uplink}"


def uplink_dhcp_chain(uplink: str) -> str:
    """The ebtables chain the uplink chain sends DHCP frames crossing the uplink to (see flatnet.ebtables)."""
    return f"zsupd-{uplink_chain(uplink).removeprefix('zsup-')}"
