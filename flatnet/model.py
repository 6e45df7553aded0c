"""The desired state flatnet converges to (persisted under ``state_dir/flatnet/state.json``).

Values are validated on construction, so a bad address fails with a message naming the field and value
before anything on the host changes.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flatnet.names import IFNAME_MAX


def _ipv4(field: str, v: str) -> str:
    try:
        return str(ipaddress.IPv4Address(v))
    except ValueError:
        raise ValueError(f"{field} {v!r} is not an IPv4 address") from None


def _netmask(v: str) -> str:
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{v}")
    except ValueError:
        raise ValueError(f"netmask {v!r} is not a contiguous IPv4 netmask such as 255.255.255.0") from None
    return v


def _ifname(field: str, v: str) -> str:
    if not v or len(v) > IFNAME_MAX or "/" in v or " " in v:
        raise ValueError(f"{field} {v!r} is not a valid interface name (1..{IFNAME_MAX} characters)")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class L3Spec(_Model):
    """One L3 network served on this host."""

    uuid: str = Field(min_length=1)
    bridge: str
    uplink: str | None = None  # the bridge's physical port; DHCP/ARP/metadata are kept off it
    dhcp_ip: str
    netmask: str
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    dns_domain: str | None = None
    anti_spoofing: bool = True

    @field_validator("bridge")
    @classmethod
    def _v_bridge(cls, v: str) -> str:
        return _ifname("bridgeName", v)

    @field_validator("uplink")
    @classmethod
    def _v_uplink(cls, v: str | None) -> str | None:
        return None if v is None else _ifname("physicalInterface", v)

    @field_validator("dhcp_ip")
    @classmethod
    def _v_dhcp(cls, v: str) -> str:
        return _ipv4("dhcpServerIp", v)

    @field_validator("gateway")
    @classmethod
    def _v_gw(cls, v: str | None) -> str | None:
        return None if v is None else _ipv4("gateway", v)

    @field_validator("dns")
    @classmethod
    def _v_dns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_ipv4("dns", d) for d in v)

    @field_validator("netmask")
    @classmethod
    def _v_mask(cls, v: str) -> str:
        return _netmask(v)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.dhcp_ip}/{self.netmask}", strict=False)


class NicSpec(_Model):
    """One VM NIC on an L3 served on this host."""

    vm_uuid: str
    l3_uuid: str
    mac: str
    ip: str
    netmask: str
    gateway: str | None = None
    hostname: str | None = None
    default_l3: bool = True
    tap: str | None = None

    @field_validator("mac")
    @classmethod
    def _v_mac(cls, v: str) -> str:
        parts = v.split(":")
        if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                      for p in parts):
            raise ValueError(f"mac {v!r} is not a MAC address like 52:54:00:12:34:56")
        if int(parts[0], 16) & 1:
            raise ValueError(f"mac {v!r} is a multicast address; a NIC needs a unicast MAC")
        return v.lower()

    @field_validator("ip")
    @classmethod
    def _v_ip(cls, v: str) -> str:
        return _ipv4("ip", v)

    @field_validator("netmask")
    @classmethod
    def _v_mask(cls, v: str) -> str:
        return _netmask(v)

    @field_validator("gateway")
    @classmethod
    def _v_gw(cls, v: str | None) -> str | None:
        return None if v is None else _ipv4("gateway", v)

    @field_validator("hostname")
    @classmethod
    def _v_host(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        ok = all(c.isalnum() or c in "-." for c in v) and not v.startswith(("-", ".")) and len(v) <= 253
        if not ok:
            raise ValueError(f"hostname {v!r} is not a valid DNS name (letters, digits, '-' and '.')")
        return v

    @field_validator("tap")
    @classmethod
    def _v_tap(cls, v: str | None) -> str | None:
        return None if v is None else _ifname("tapName", v)

    @property
    def key(self) -> str:
        return f"{self.l3_uuid}/{self.mac}"


class L3Address(_Model):
    """One more (L3, IP) of a VM on which its metadata is also served (a VM with several Userdata L3s)."""

    l3_uuid: str = Field(min_length=1)
    ip: str

    @field_validator("ip")
    @classmethod
    def _v_ip(cls, v: str) -> str:
        return _ipv4("vmIp", v)


class UserdataSpec(_Model):
    """What the metadata service serves to one VM (identified by its L3 and source IP): on its default L3
    (``l3_uuid``/``vm_ip``) and on each of ``addresses`` (its NICs on other L3s with the Userdata service,
    whichever NIC the guest's route to 169.254.169.254 or its CloudStack lease points at)."""

    vm_uuid: str = Field(min_length=1)
    l3_uuid: str
    vm_ip: str
    userdata: str | None = None  # the raw ``userdata::`` value (decoded when served)
    ssh_keys: tuple[str, ...] = ()
    root_password: str | None = None
    hostname: str | None = None
    instance_id: str | None = None
    service_offering: str | None = None
    availability_zone: str | None = None
    addresses: tuple[L3Address, ...] = ()

    @property
    def served_on(self) -> list[tuple[str, str]]:
        """Every (L3 uuid, source IP) this VM is identified by, default L3 first."""
        return [(self.l3_uuid, self.vm_ip)] + [(a.l3_uuid, a.ip) for a in self.addresses
                                               if (a.l3_uuid, a.ip) != (self.l3_uuid, self.vm_ip)]

    @field_validator("vm_ip")
    @classmethod
    def _v_ip(cls, v: str) -> str:
        return _ipv4("vmIp", v)


class DesiredState(BaseModel):
    """Everything this host should serve, plus what flatnet owns on the host (so it can remove it)."""

    model_config = ConfigDict(extra="forbid")

    l3s: dict[str, L3Spec] = {}
    nics: dict[str, NicSpec] = {}
    userdata: dict[str, UserdataSpec] = {}
    owned_l3s: list[str] = []  # L3s whose namespace/dnsmasq may exist on the host
    owned_chains: list[str] = []
