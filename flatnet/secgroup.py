"""Security-group rules of one host rendered as ONE nftables script (pure: no I/O).

Why two tables (probe on this project's kernels, ``scripts/secgroup_probe.sh``): the nftables ``bridge``
family sees the bridge ports (``iifname``/``oifname`` are the taps) but ``ct state`` there needs
``nf_conntrack_bridge``, which Debian's and the test machines' kernels may not have (the rule is refused with
"Protocol error"). ``br_netfilter`` (``bridge-nf-call-iptables=1``) does pass bridged IPv4/IPv6 through the
``inet`` FORWARD hook with conntrack, but there the in/out device is the bridge, not the tap. So:

* ``table bridge zstack_sg`` (forward, priority -200, before br_netfilter) only *classifies*: it writes the
  index of the source tap into bits 16-30 and of the destination tap into bits 0-14 of the packet mark;
* ``table inet zstack_sg`` (forward, priority 0) filters on those marks with conntrack.

Both tables are replaced in one ``nft -f`` transaction (declare, delete, define), so a host never sees a
half-built rule set, and established flows survive (conntrack lives outside the tables).

Semantics (ZStack 1.0, reference §3/§5, with its defects fixed):

* A NIC in no group has no index: its traffic is not filtered here (1.0's "a NIC in no group is open"). A
  host without filtered NICs gets no tables at all.
* Replies (``ct direction reply``) and related traffic (ICMP errors) always pass. Packets of the
  *original* direction are checked against the rules on every packet, not only the first: an established
  flow that the rules still allow keeps going through a rule change, one they no longer allow stops at once
  (1.0 accepted every ESTABLISHED packet, so a removed rule kept old flows open).
* Ingress: the union of the NIC's ingress rules is a whitelist; with no ingress rule the NIC's
  ``ingress_default`` applies (1.0 default: deny). Egress likewise with ``egress_default`` (1.0: accept).
  Denied packets are dropped (1.0 rejected ingress with icmp-host-prohibited; a REJECT of a bridged packet
  would be sent through the host's routing, which need not reach the guest network).
* Always allowed whatever the rules: DHCPv4 (68→67 out, 67→68 in), DNS out (udp 53, as 1.0), anything to
  the host's own flat services (``host_service_ips``: the L3's DHCP/metadata address) and to
  169.254.169.254; IPv6 neighbour discovery and MLD, DHCPv6 as a client. A guest may not send router
  advertisements or DHCPv6 server replies. ARP is not IP and never reaches these tables.
* Anti-spoofing (1.0 did it in the egress chain): with ``anti_spoofing`` a NIC may send IPv4 only from its
  own addresses (DHCP from 0.0.0.0 excepted); flatnet's ebtables rules check MAC and IP as well.
* A rule's ``addresses`` are the peers (sources for Ingress, destinations for Egress): CIDRs and/or single
  IPs, IPv4 or IPv6, already merged by the caller (allowedCidr, same-group peers, remote-group members).
  A rule with no address matches nothing (a remote group without members) but still makes its direction a
  whitelist. ``0.0.0.0/0`` / ``::/0`` match the whole family without an address match.
* ICMP: ``start_port`` is the type, ``end_port`` the code, -1 = any (1.0's min/max swap is not copied).

Every value that reaches the script is validated here (tap names, MACs, addresses, numbers), so nothing a
caller sends can change the script's structure.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

TABLE = "zstack_sg"
METADATA_IP = "169.254.169.254"
MAX_NICS = 0x7FFF
SRC_SHIFT = 16
OUR_BITS = 0x7FFF7FFF
_TAP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

Direction = Literal["Ingress", "Egress"]
Protocol = Literal["TCP", "UDP", "ICMP", "ALL"]
Policy = Literal["accept", "deny"]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class RuleSetError(ValueError):
    """A value that cannot be rendered (names the NIC, the field and the value)."""


@dataclass(frozen=True)
class SgRule:
    direction: Direction
    protocol: Protocol
    start_port: int = -1
    end_port: int = -1
    addresses: tuple[str, ...] = ("0.0.0.0/0",)


@dataclass(frozen=True)
class SgNic:
    """One filtered NIC: its tap on this host, identity, defaults and the union of its groups' rules."""

    tap: str
    mac: str
    ips: tuple[str, ...]
    rules: tuple[SgRule, ...] = ()
    ingress_default: Policy = "deny"
    egress_default: Policy = "accept"
    host_service_ips: tuple[str, ...] = ()
    anti_spoofing: bool = True
    uuid: str = ""


@dataclass
class Rendered:
    """The script and how many rules it puts in each table (used to notice a hand-edited rule set)."""

    text: str
    rule_counts: dict[str, int] = field(default_factory=dict)


def _nets(values: Iterable[str], what: str) -> list[Net]:
    out: list[Net] = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise RuleSetError(f"{what}: {v!r} is not an IP address or CIDR") from None
    return out


def _set(nets: Sequence[Net]) -> str:
    items = [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in nets]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _by_family(nets: Sequence[Net]) -> dict[str, list[Net]]:
    """Collapsed (non-overlapping, as nft's interval sets need) networks per family ``ip``/``ip6``."""
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    return {"ip": list(ipaddress.collapse_addresses(v4)),  # type: ignore[arg-type]
            "ip6": list(ipaddress.collapse_addresses(v6))}  # type: ignore[arg-type]


def _ports(r: SgRule, where: str) -> str:
    if not -1 <= r.start_port <= 65535 or not -1 <= r.end_port <= 65535:
        raise RuleSetError(f"{where}: port/type {r.start_port}/{r.end_port} out of range")
    proto = r.protocol.lower()
    if r.start_port < 0 or (r.start_port == 0 and r.end_port == 65535):
        return f"meta l4proto {proto}"
    if r.end_port < 0 or r.end_port == r.start_port:
        return f"{proto} dport {r.start_port}"
    lo, hi = sorted((r.start_port, r.end_port))
    return f"{proto} dport {lo}-{hi}"


def _icmp(r: SgRule, family: str, where: str) -> str:
    if not -1 <= r.start_port <= 255 or not -1 <= r.end_port <= 255:
        raise RuleSetError(f"{where}: ICMP type/code {r.start_port}/{r.end_port} out of range")
    name = "icmp" if family == "ip" else "icmpv6"
    if r.start_port < 0:
        return f"meta l4proto {'icmp' if family == 'ip' else 'ipv6-icmp'}"
    out = f"{name} type {r.start_port}"
    return out + (f" {name} code {r.end_port}" if r.end_port >= 0 else "")


def _match(r: SgRule, family: str, where: str) -> str:
    if r.protocol == "ALL":
        return ""
    if r.protocol == "ICMP":
        return _icmp(r, family, where)
    if r.protocol in ("TCP", "UDP"):
        return _ports(r, where)
    raise RuleSetError(f"{where}: unknown protocol {r.protocol!r}")


def _rule_lines(r: SgRule, where: str) -> list[str]:
    """The nft rules (verdict ``return``: allowed) of one security-group rule."""
    if r.direction not in ("Ingress", "Egress"):
        raise RuleSetError(f"{where}: unknown rule type {r.direction!r}")
    key = "saddr" if r.direction == "Ingress" else "daddr"
    out = []
    for family, nets in _by_family(_nets(r.addresses, where)).items():
        if not nets:
            continue
        if r.protocol == "ICMP" and family == "ip6" and r.start_port >= 0:
            continue  # ICMPv4 type numbers mean nothing for ICMPv6
        everything = any(n.prefixlen == 0 for n in nets)
        addr = f"meta nfproto {'ipv4' if family == 'ip' else 'ipv6'}" if everything else f"{family} {key} {_set(nets)}"
        out.append(" ".join(x for x in (addr, _match(r, family, where)) if x) + " return")
    return out


def _egress_chain(nic: SgNic, ips: list[Net], where: str) -> list[str]:
    services = _nets((*nic.host_service_ips, METADATA_IP), f"{where} hostServiceIps")
    lines = [
        "udp sport 68 udp dport 67 return",
        "icmpv6 type nd-router-advert drop",
        "udp sport 547 drop",
        "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, "
        "mld2-listener-report } return",
        "udp sport 546 udp dport 547 return",
    ]
    v4 = [n for n in ips if n.version == 4]
    if nic.anti_spoofing and v4:
        lines.append(f"meta nfproto ipv4 ip saddr != {_set(v4)} drop")
    lines += [f"{fam} daddr {_set(nets)} return" for fam, nets in _by_family(services).items() if nets]
    lines.append("udp dport 53 return")
    rules = [r for r in nic.rules if r.direction == "Egress"]
    for i, r in enumerate(rules):
        lines += _rule_lines(r, f"{where} egress rule {i}")
    lines.append("drop" if rules or nic.egress_default == "deny" else "return")
    return lines


def _ingress_chain(nic: SgNic, where: str) -> list[str]:
    lines = [
        "udp sport 67 udp dport 68 return",
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, nd-redirect, "
        "mld-listener-query } return",
        "udp sport 547 udp dport 546 return",
    ]
    rules = [r for r in nic.rules if r.direction == "Ingress"]
    for i, r in enumerate(rules):
        lines += _rule_lines(r, f"{where} ingress rule {i}")
    lines.append("drop" if rules or nic.ingress_default == "deny" else "return")
    return lines


def _check_nic(nic: SgNic) -> list[Net]:
    where = f"nic {nic.uuid or nic.tap}"
    if not _TAP.match(nic.tap or ""):
        raise RuleSetError(f"{where}: tap name {nic.tap!r} is not a Linux interface name")
    if not _MAC.match(nic.mac or ""):
        raise RuleSetError(f"{where}: mac {nic.mac!r} is not a lower-case MAC address")
    for p in (nic.ingress_default, nic.egress_default):
        if p not in ("accept", "deny"):
            raise RuleSetError(f"{where}: default policy {p!r} is neither accept nor deny")
    for i, r in enumerate(nic.rules):
        if r.direction not in ("Ingress", "Egress"):
            raise RuleSetError(f"{where} rule {i}: unknown rule type {r.direction!r}")
    return _nets(nic.ips, f"{where} ips")


def chain_names(tap: str) -> tuple[str, str]:
    """(ingress, egress) chain names of a tap: derived from it, never truncated (nft allows 255 chars)."""
    key = tap.replace(".", "_").replace("-", "_")
    return f"in_{key}", f"out_{key}"


def render(nics: Sequence[SgNic], generation: int) -> Rendered:
    """The whole rule set of a host for ``nics`` as one atomic nft script. Deterministic: the same input
    gives the same text (NICs are ordered by tap). Raises :class:`RuleSetError` on a bad value."""
    if generation < 0:
        raise RuleSetError(f"generation {generation} is negative")
    ordered = sorted(nics, key=lambda n: n.tap)
    if len(ordered) > MAX_NICS:
        raise RuleSetError(f"{len(ordered)} NICs on one host; at most {MAX_NICS} can be filtered")
    taps = [n.tap for n in ordered]
    dup = sorted({t for t in taps if taps.count(t) > 1})
    if dup:
        raise RuleSetError(f"tap(s) {dup} given more than once")
    chains: dict[str, list[str]] = {}
    src_map, dst_map, bridge_chains = [], [], {}
    for i, nic in enumerate(ordered, start=1):
        ips = _check_nic(nic)
        cin, cout = chain_names(nic.tap)
        chains[cout] = _egress_chain(nic, ips, f"nic {nic.uuid or nic.tap}")
        chains[cin] = _ingress_chain(nic, f"nic {nic.uuid or nic.tap}")
        src_map.append(f"0x{i << SRC_SHIFT:08x} : jump {cout}")
        dst_map.append(f"0x{i:08x} : jump {cin}")
        bridge_chains[f"src_{i}"] = [f"meta mark set meta mark | 0x{i << SRC_SHIFT:08x}"]
        bridge_chains[f"dst_{i}"] = [f"meta mark set meta mark | 0x{i:08x}"]
    comment = f"zstack-py security groups generation {generation}"
    base = [f'meta mark & 0x{OUR_BITS:08x} == 0x00000000 accept comment "{comment}"', "ct state related accept",
            "ct state established ct direction reply accept"]
    if ordered:
        base += [f"meta mark & 0x{OUR_BITS & 0x7FFF0000:08x} vmap {{ {', '.join(src_map)} }}",
                 f"meta mark & 0x{OUR_BITS & 0x7FFF:08x} vmap {{ {', '.join(dst_map)} }}"]
    bridge = [f'meta mark set meta mark & 0x{~OUR_BITS & 0xFFFFFFFF:08x} comment "{comment}"']
    if ordered:
        bridge += [
            "iifname vmap { " + ", ".join(f'"{n.tap}" : jump src_{i}' for i, n in enumerate(ordered, 1)) + " }",
            "oifname vmap { " + ", ".join(f'"{n.tap}" : jump dst_{i}' for i, n in enumerate(ordered, 1)) + " }"]
    out = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table bridge {TABLE}",
           f"delete table bridge {TABLE}", ""]
    if not ordered:  # nothing to filter: no tables at all (no per-packet cost on hosts without members)
        return Rendered("\n".join(out), {"inet": 0, "bridge": 0})
    out += [f"table inet {TABLE} {{", f'\tcomment "{comment}"',
           "\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;",
           *(f"\t\t{x}" for x in base), "\t}"]
    for name, lines in chains.items():
        out += [f"\tchain {name} {{", *(f"\t\t{x}" for x in lines), "\t}"]
    out += ["}", "", f"table bridge {TABLE} {{", f'\tcomment "{comment}"', "\tchain forward {",
            "\t\ttype filter hook forward priority -200; policy accept;", *(f"\t\t{x}" for x in bridge), "\t}"]
    for name, lines in bridge_chains.items():
        out += [f"\tchain {name} {{", *(f"\t\t{x}" for x in lines), "\t}"]
    out += ["}", ""]
    counts = {"inet": len(base) + sum(len(v) for v in chains.values()),
              "bridge": len(bridge) + sum(len(v) for v in bridge_chains.values())}
    return Rendered("\n".join(out), counts)


def parse_generation(comment: str | None) -> int | None:
    """The generation written by :func:`render` into the tables' and their first rules' comments, or None
    (``nft -j`` of nftables 1.0.6 shows rule comments but not table comments)."""
    m = re.fullmatch(r"zstack-py security groups generation (\d+)", comment or "")
    return int(m.group(1)) if m else None
