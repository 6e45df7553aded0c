"""ebtables (nft backend) rules: host-local DHCP/metadata on the uplink, per-NIC anti-spoofing.

Per NIC, two chains: in the ``nat`` table (PREROUTING) a frame from the tap with another source MAC is
dropped BEFORE the bridge learns its source address (the bridge updates its forwarding database between
PREROUTING and FORWARD: a MAC check only in ``filter`` would still let a spoofer make the bridge send the
victim's traffic to it); in the ``filter`` table (FORWARD, INPUT) the IPv4/ARP/DHCP checks.

All changes of one sync go through ONE ``ebtables-restore --noflush`` transaction (atomic in nf_tables):
a chain is declared (``:chain RETURN`` creates or flushes it) and filled in the same transaction, so a
chain is never seen half-built. What exists is read first (``ebtables-save``) and only differences are
written, so a sync with nothing to change runs no restore at all. Chain names are unique across tables;
the prefix of a chain names its table (:func:`table_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flatnet.model import L3Spec, NicSpec
from flatnet.names import METADATA_IP, NIC_MAC_PREFIX, nic_chain, nic_mac_chain, uplink_chain, uplink_dhcp_chain
from zsutil.runner import run

#: The built-in chains flatnet jumps from, per table.
BASE_CHAINS = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING",)}
TABLES = tuple(BASE_CHAINS)


def table_of(chain: str) -> str:
    """The table of one of flatnet's chains or of a built-in chain it jumps from."""
    return "nat" if chain == "PREROUTING" or chain.startswith(NIC_MAC_PREFIX) else "filter"


@dataclass
class Ruleset:
    """The ``filter`` and ``nat`` tables as ``ebtables-save`` prints them: chain → rules (without
    ``-A <chain>``); chain names are unique across the two (built-ins: see :func:`table_of`)."""

    chains: dict[str, list[str]] = field(default_factory=dict)


def parse_save(text: str) -> Ruleset:
    rs = Ruleset()
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table not in TABLES or not line or line.startswith("#"):
            continue
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if table == table_of(name):
                rs.chains.setdefault(name, [])
        elif line.startswith("-A "):
            _, chain, rule = line.split(" ", 2)
            if table == table_of(chain):
                rs.chains.setdefault(chain, []).append(" ".join(rule.split()))
    return rs


def nic_mac_rules(nic: NicSpec) -> list[str]:
    """The tap's ``nat`` chain: nothing but the NIC's own source MAC reaches the bridge's learning."""
    return [f"-s ! {nic.mac} -j DROP"]


def nic_rules(nic: NicSpec) -> list[str]:
    """The tap's ``filter`` chain: only the NIC's MAC; IPv4/ARP only from its IP (DHCP discover from 0.0.0.0
    allowed); never a DHCP server reply; everything else dropped."""
    mac, ip = nic.mac, nic.ip
    return [
        f"-s ! {mac} -j DROP",
        "-p IPv4 --ip-proto udp --ip-sport 67 -j DROP",
        "-p IPv4 --ip-src 0.0.0.0 --ip-proto udp --ip-dport 67 -j RETURN",
        f"-p IPv4 --ip-src {ip} -j RETURN",
        f"-p ARP --arp-mac-src ! {mac} -j DROP",
        f"-p ARP --arp-ip-src {ip} -j RETURN",
        "-p ARP --arp-ip-src 0.0.0.0 -j RETURN",
        "-j DROP",
    ]


def uplink_rules(uplink: str, dhcp_ips: Iterable[str]) -> list[str]:
    """DHCP frames crossing the uplink go through :func:`uplink_dhcp_rules`; the flat DHCP IPs' frames, ARP for
    them and the metadata address, and IPv4 to them, never cross it."""
    rules = []
    for d in ("-i", "-o"):
        rules.append(f"-p IPv4 {d} {uplink} --ip-proto udp --ip-dport 67:68 -j {uplink_dhcp_chain(uplink)}")
        for ip in sorted({*dhcp_ips, METADATA_IP}):
            rules.append(f"-p IPv4 {d} {uplink} --ip-dst {ip} -j DROP")
            rules.append(f"-p ARP {d} {uplink} --arp-ip-dst {ip} -j DROP")
            rules.append(f"-p ARP {d} {uplink} --arp-ip-src {ip} -j DROP")
        for ip in sorted(set(dhcp_ips)):
            rules.append(f"-p IPv4 {d} {uplink} --ip-src {ip} -j DROP")
    return rules


def uplink_dhcp_rules(macs: Iterable[str]) -> list[str]:
    """DHCP crossing the uplink, from or to a NIC that this host's flat dnsmasq serves, is dropped both ways: a
    flat guest's requests stay on its host and only its host answers it (nothing from across the L2, not a server
    elsewhere, not a far client claiming its MAC). DHCP of other NICs on the same L2 crosses: a virtual router
    on another host serving another L3 of this L2 reaches its guests here (a blanket DHCP drop on the uplink
    made that impossible as soon as one L3 of the L2 used Flat DHCP)."""
    rules = []
    for mac in sorted(set(macs)):
        rules.append(f"-s {mac} -j DROP")
        rules.append(f"-d {mac} -j DROP")
    return rules


@dataclass(frozen=True)
class Desired:
    chains: Mapping[str, list[str]]
    jumps: frozenset[tuple[str, str]]  # (base chain, rule)


def desired(l3s: Mapping[str, L3Spec], nics: Iterable[NicSpec]) -> Desired:
    nics = list(nics)
    chains: dict[str, list[str]] = {}
    jumps: set[tuple[str, str]] = set()
    by_uplink: dict[str, set[str]] = {}
    macs: dict[str, set[str]] = {}
    for l3 in l3s.values():
        if l3.uplink:
            by_uplink.setdefault(l3.uplink, set()).add(l3.dhcp_ip)
            macs.setdefault(l3.uplink, set())
    for nic in nics:
        spec = l3s.get(nic.l3_uuid)
        if spec is not None and spec.uplink:
            macs[spec.uplink].add(nic.mac)
    for uplink, ips in by_uplink.items():
        c = uplink_chain(uplink)
        # declared before the chain that jumps to it (ebtables-restore refuses a jump to a chain not yet there)
        chains[uplink_dhcp_chain(uplink)] = uplink_dhcp_rules(macs[uplink])
        chains[c] = uplink_rules(uplink, ips)
        jumps.add(("FORWARD", f"-j {c}"))
    for nic in nics:
        spec = l3s.get(nic.l3_uuid)
        if nic.tap and spec is not None and spec.anti_spoofing:
            c = nic_chain(nic.tap)
            chains[c] = nic_rules(nic)
            jumps.add(("FORWARD", f"-i {nic.tap} -j {c}"))
            jumps.add(("INPUT", f"-i {nic.tap} -j {c}"))
            m = nic_mac_chain(nic.tap)
            chains[m] = nic_mac_rules(nic)
            jumps.add(("PREROUTING", f"-i {nic.tap} -j {m}"))
    return Desired(chains, frozenset(jumps))


def plan(have: Ruleset, want: Desired, owned: Iterable[str]) -> dict[str, list[str]]:
    """Per table, the restore lines turning ``have`` into ``want``; ``owned`` chains not wanted are removed.
    Tables with nothing to change are absent."""
    lines: dict[str, list[str]] = {}

    def add(chain: str, *out: str) -> None:
        lines.setdefault(table_of(chain), []).extend(out)

    for chain, rules in want.chains.items():
        if have.chains.get(chain) != rules:
            add(chain, f":{chain} RETURN", *(f"-A {chain} {r}" for r in rules))
    for base, rule in sorted(want.jumps):
        if rule not in have.chains.get(base, []):
            add(base, f"-A {base} {rule}")
    gone = {c for c in owned if c in have.chains and c not in want.chains}
    for base in (b for bases in BASE_CHAINS.values() for b in bases):
        for rule in have.chains.get(base, []):
            target = rule.rsplit("-j ", 1)[-1].strip()
            if target in gone or (target in want.chains and (base, rule) not in want.jumps):
                add(base, f"-D {base} {rule}")
    for chain in sorted(gone):   # all flushed first: a chain still jumped to by another cannot be deleted
        add(chain, f":{chain} RETURN")
    for chain in sorted(gone):
        add(chain, f"-X {chain}")
    return lines


def _argv(host_netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", host_netns, *argv] if host_netns else argv


async def read(host_netns: str | None) -> Ruleset:
    res = await run(_argv(host_netns, ["ebtables-save"]), timeout=30)
    return parse_save(res.stdout)


async def sync(host_netns: str | None, want: Desired, owned: Iterable[str]) -> int:
    """Converge the filter and nat tables to ``want`` (one restore); returns the number of restore lines
    written (0: no change)."""
    lines = plan(await read(host_netns), want, owned)
    if lines:
        text = "".join(f"*{t}\n" + "\n".join(ls) + "\nCOMMIT\n" for t, ls in sorted(lines.items()))
        await run(_argv(host_netns, ["ebtables-restore", "--noflush"]), timeout=60, input=text)
    return sum(len(ls) for ls in lines.values())
