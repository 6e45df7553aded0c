"""ebtables (nft backend) rules: host-local DHCP/metadata on the uplink, per-NIC anti-spoofing.

All changes of one sync go through ONE ``ebtables-restore --noflush`` transaction (atomic in nf_tables):
a chain is declared (``:chain RETURN`` creates or flushes it) and filled in the same transaction, so a
chain is never seen half-built. What exists is read first (``ebtables-save``) and only differences are
written, so a sync with nothing to change runs no restore at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flatnet.model import L3Spec, NicSpec
from flatnet.names import METADATA_IP, nic_chain, uplink_chain
from storage.runner import run

BASE_CHAINS = ("INPUT", "FORWARD", "OUTPUT")


@dataclass
class Ruleset:
    """The filter table as ``ebtables-save`` prints it: chain → rules (without ``-A <chain>``)."""

    chains: dict[str, list[str]] = field(default_factory=dict)


def parse_save(text: str) -> Ruleset:
    rs = Ruleset()
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table != "filter" or not line or line.startswith("#"):
            continue
        elif line.startswith(":"):
            rs.chains.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A "):
            _, chain, rule = line.split(" ", 2)
            rs.chains.setdefault(chain, []).append(" ".join(rule.split()))
    return rs


def nic_rules(nic: NicSpec) -> list[str]:
    """The tap's chain: only the NIC's MAC; IPv4/ARP only from its IP (DHCP discover from 0.0.0.0 allowed);
    never a DHCP server reply; everything else dropped."""
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
    """DHCP, ARP for the DHCP IPs and the metadata address, and IPv4 to them, never cross the uplink."""
    rules = []
    for d in ("-i", "-o"):
        rules.append(f"-p IPv4 {d} {uplink} --ip-proto udp --ip-dport 67:68 -j DROP")
        for ip in sorted({*dhcp_ips, METADATA_IP}):
            rules.append(f"-p IPv4 {d} {uplink} --ip-dst {ip} -j DROP")
            rules.append(f"-p ARP {d} {uplink} --arp-ip-dst {ip} -j DROP")
            rules.append(f"-p ARP {d} {uplink} --arp-ip-src {ip} -j DROP")
    return rules


@dataclass(frozen=True)
class Desired:
    chains: Mapping[str, list[str]]
    jumps: frozenset[tuple[str, str]]  # (base chain, rule)


def desired(l3s: Mapping[str, L3Spec], nics: Iterable[NicSpec]) -> Desired:
    chains: dict[str, list[str]] = {}
    jumps: set[tuple[str, str]] = set()
    by_uplink: dict[str, set[str]] = {}
    for l3 in l3s.values():
        if l3.uplink:
            by_uplink.setdefault(l3.uplink, set()).add(l3.dhcp_ip)
    for uplink, ips in by_uplink.items():
        c = uplink_chain(uplink)
        chains[c] = uplink_rules(uplink, ips)
        jumps.add(("FORWARD", f"-j {c}"))
    for nic in nics:
        spec = l3s.get(nic.l3_uuid)
        if nic.tap and spec is not None and spec.anti_spoofing:
            c = nic_chain(nic.tap)
            chains[c] = nic_rules(nic)
            jumps.add(("FORWARD", f"-i {nic.tap} -j {c}"))
            jumps.add(("INPUT", f"-i {nic.tap} -j {c}"))
    return Desired(chains, frozenset(jumps))


def plan(have: Ruleset, want: Desired, owned: Iterable[str]) -> list[str]:
    """The restore lines turning ``have`` into ``want``; ``owned`` chains not wanted are removed."""
    lines: list[str] = []
    for chain, rules in want.chains.items():
        if have.chains.get(chain) != rules:
            lines.append(f":{chain} RETURN")
            lines += [f"-A {chain} {r}" for r in rules]
    for base, rule in sorted(want.jumps):
        if rule not in have.chains.get(base, []):
            lines.append(f"-A {base} {rule}")
    gone = {c for c in owned if c in have.chains and c not in want.chains}
    for base in BASE_CHAINS:
        for rule in have.chains.get(base, []):
            target = rule.rsplit("-j ", 1)[-1].strip()
            if target in gone or (target in want.chains and (base, rule) not in want.jumps):
                lines.append(f"-D {base} {rule}")
    for chain in sorted(gone):
        lines += [f":{chain} RETURN", f"-X {chain}"]
    return lines


def _argv(host_netns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", host_netns, *argv] if host_netns else argv


async def read(host_netns: str | None) -> Ruleset:
    res = await run(_argv(host_netns, ["ebtables-save"]), timeout=30)
    return parse_save(res.stdout)


async def sync(host_netns: str | None, want: Desired, owned: Iterable[str]) -> int:
    """Converge the filter table to ``want``; returns the number of restore lines written (0: no change)."""
    lines = plan(await read(host_netns), want, owned)
    if lines:
        text = "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"
        await run(_argv(host_netns, ["ebtables-restore", "--noflush"]), timeout=60, input=text)
    return len(lines)
