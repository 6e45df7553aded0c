"""Desired state in, configuration out: pure functions, no I/O (golden-tested in tests/unit).

The state is the whole router configuration pushed by the controller (the generation number tells which
push the router runs)::

    {"generation": 7,
     "nics": [{"mac": "52:54:..", "ip": "10.0.0.5", "prefix": 24, "gateway": "10.0.0.1",
               "defaultRoute": true, "metaData": 3}],
     "snat": [{"privateNicMac": .., "publicNicMac": .., "publicIp": .., "guestCidr": "10.100.0.0/24"}],
     "dhcp": [{"nicMac": <router NIC serving it>, "mac": .., "ip": .., "prefix": 24, "gateway": ..,
               "dns": [..], "hostname": ..}],
     "dns": {"nicMacs": [..], "upstreams": [..]},
     "vips": [{"ip": .., "prefix": 24, "nicMac": <router NIC on the VIP's L3>}],
     "eips": [{"vipIp": .., "guestIp": .., "publicNicMac": .., "privateNicMac": ..}],
     "pfs": [{"vipIp": .., "protocol": "tcp"|"udp", "vipPortStart": 2222, "vipPortEnd": 2222,
              "privatePortStart": 22, "privatePortEnd": 22, "guestIp": .., "allowedCidr": null|"a.b.c.d/n",
              "publicNicMac": .., "privateNicMac": ..}]}

Port forwarding is a DNAT of the VIP's port range (from ``allowedCidr`` only, when given) to the same-sized
range of the guest, port for port: the same ports keep them, one port is rewritten, a shifted range maps each
port through an nft map. The forward chain lets in only DNAT'd connections to the guest ports of a rule (one
rule per NIC pair and protocol with a guest . ports set) or to an EIP's guest; replies are translated back
by conntrack, so no SNAT rule is needed for them. A source outside ``allowedCidr`` is not DNAT'd and meets
the input chain's drop.

``ifnames`` maps each router NIC's MAC to its interface name inside the router.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

TABLE = "zsvr"
RUN_DIR = "/run/vrouter"


class StateError(ValueError):
    """The pushed state is invalid (the message names the field and value)."""


#: a dotted quad as ipaddress.IPv4Address accepts it (no leading zeros), matched without its slow parser: a
#: push of thousands of addresses is rendered on the router's CPU (TCG in tests)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _ip(value: Any, field: str) -> str:
    if isinstance(value, str) and _IPV4.fullmatch(value):
        return value
    raise StateError(f"{field}: {value!r} is not an IPv4 address")


def _network(ip: str, prefix: int) -> tuple[str, str]:
    """(network address, netmask) of ``ip``/``prefix`` (``ip`` already checked by _ip)."""
    a, b, c, d = (int(x) for x in ip.split("."))
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    net = ((a << 24) | (b << 16) | (c << 8) | d) & mask
    return (".".join(str(net >> s & 255) for s in (24, 16, 8, 0)),
            ".".join(str(mask >> s & 255) for s in (24, 16, 8, 0)))


def _cidr(value: Any, field: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=False))
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError) as e:
        raise StateError(f"{field}: {value!r} is not an IPv4 CIDR") from e


def _ifname(ifnames: dict[str, str], mac: Any, field: str) -> str:
    name = ifnames.get(str(mac).lower())
    if name is None:
        raise StateError(f"{field}: no router NIC has MAC {mac!r} (NICs: {sorted(ifnames)})")
    return name


def _q(name: str) -> str:
    return '"' + name + '"'


def _prefix(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 32:
        raise StateError(f"{field}: {value!r} is not an integer in 1..32")
    return value


def _port(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 65535:
        raise StateError(f"{field}: {value!r} is not a port (an integer in 1..65535)")
    return value


def _ports(start: int, end: int) -> str:
    return str(start) if start == end else f"{start}-{end}"


def _pf_rules(i: int, pf: dict[str, Any],
              ifnames: dict[str, str]) -> tuple[str, tuple[str, str, str], tuple[str, int, int]]:
    """The prerouting DNAT rule of ``pfs[i]``, and what the forward chain lets in: ((public NIC, private NIC,
    protocol), (guest, first port, last port))."""
    f = f"pfs[{i}]"
    vip, guest = _ip(pf.get("vipIp"), f"{f}.vipIp"), _ip(pf.get("guestIp"), f"{f}.guestIp")
    proto = pf.get("protocol")
    if proto not in ("tcp", "udp"):
        raise StateError(f"{f}.protocol: {proto!r} is not tcp or udp")
    vs, ve = _port(pf.get("vipPortStart"), f"{f}.vipPortStart"), _port(pf.get("vipPortEnd"), f"{f}.vipPortEnd")
    ps = _port(pf.get("privatePortStart"), f"{f}.privatePortStart")
    pe = _port(pf.get("privatePortEnd"), f"{f}.privatePortEnd")
    if ve < vs or pe < ps or ve - vs != pe - ps:
        raise StateError(f"{f}: vip ports {vs}-{ve} and private ports {ps}-{pe} are not two ranges of one size")
    pub = _ifname(ifnames, pf.get("publicNicMac"), f"{f}.publicNicMac")
    priv = _ifname(ifnames, pf.get("privateNicMac"), f"{f}.privateNicMac")
    src = f" ip saddr {_cidr(pf['allowedCidr'], f'{f}.allowedCidr')}" if pf.get("allowedCidr") else ""
    if vs == ps:
        target = guest
    elif vs == ve:
        target = f"{guest}:{ps}"
    else:
        pairs = ", ".join(f"{vs + k} : {ps + k}" for k in range(ve - vs + 1))
        target = f"{guest} : {proto} dport map {{ {pairs} }}"
    dnat = f"iifname {_q(pub)} ip daddr {vip}{src} {proto} dport {_ports(vs, ve)} dnat to {target}"
    return dnat, (pub, priv, proto), (guest, ps, pe)


def _pf_accepts(lets: dict[tuple[str, str, str], list[tuple[str, int, int]]]) -> list[str]:
    """One forward rule per (public NIC, private NIC, protocol) matching guest . port-range elements (the
    ranges of one guest merged: an interval set refuses overlapping elements)."""
    rules = []
    for (pub, priv, proto), elems in sorted(lets.items()):
        merged: list[list[Any]] = []
        for guest, ps, pe in sorted(elems, key=lambda e: (tuple(int(x) for x in e[0].split(".")), e[1], e[2])):
            if merged and merged[-1][0] == guest and ps <= merged[-1][2] + 1:
                merged[-1][2] = max(merged[-1][2], pe)
            else:
                merged.append([guest, ps, pe])
        rules.append(f"iifname {_q(pub)} oifname {_q(priv)} ip daddr . {proto} dport {{ " +
                     ", ".join(f"{g} . {_ports(a, b)}" for g, a, b in merged) + " } ct status dnat accept")
    return rules


def nic_plan(state: dict[str, Any], ifnames: dict[str, str]) -> list[dict[str, Any]]:
    """Per NIC: interface name, its addresses (its own first, then the VIPs it holds), and the default gateway
    (only on the default-route NIC)."""
    plan = []
    by_mac: dict[str, dict[str, Any]] = {}
    for i, nic in enumerate(state.get("nics", [])):
        prefix = _prefix(nic.get("prefix"), f"nics[{i}].prefix")
        gw = nic.get("gateway")
        entry = {"ifname": _ifname(ifnames, nic.get("mac"), f"nics[{i}].mac"),
                 "addresses": [f"{_ip(nic.get('ip'), f'nics[{i}].ip')}/{prefix}"],
                 "gateway": _ip(gw, f"nics[{i}].gateway") if nic.get("defaultRoute") and gw else None}
        plan.append(entry)
        by_mac[str(nic.get("mac")).lower()] = entry
    for i, vip in enumerate(state.get("vips", [])):
        holder = by_mac.get(str(vip.get("nicMac")).lower())
        if holder is None:
            raise StateError(f"vips[{i}].nicMac: {vip.get('nicMac')!r} is not the MAC of a NIC in nics")
        address = f"{_ip(vip.get('ip'), f'vips[{i}].ip')}/{_prefix(vip.get('prefix'), f'vips[{i}].prefix')}"
        if address not in holder["addresses"]:
            holder["addresses"].append(address)
    return plan


def nft_ruleset(state: dict[str, Any], ifnames: dict[str, str]) -> str:
    """One nft script that replaces the router's table atomically (``nft -f`` is one transaction)."""
    inp = ["iif lo accept", "ct state established,related accept", "ct state invalid drop",
           "ip protocol icmp accept"]
    fwd = ["ct state established,related accept"]
    pre: list[str] = []
    post: list[str] = []
    dhcp_nics = sorted({_ifname(ifnames, e.get("nicMac"), f"dhcp[{i}].nicMac")
                        for i, e in enumerate(state.get("dhcp", []))})
    for n in dhcp_nics:
        inp.append(f"iifname {_q(n)} udp dport 67 accept")
    dns = state.get("dns") or {}
    for n in sorted({_ifname(ifnames, m, "dns.nicMacs") for m in dns.get("nicMacs", [])}):
        inp.append(f"iifname {_q(n)} udp dport 53 accept")
        inp.append(f"iifname {_q(n)} tcp dport 53 accept")
    # EIPs: per public NIC one DNAT map VIP -> guest, one SNAT map guest -> VIP and one set of guests let in
    # (three rules however many EIPs: nft compiles map elements much faster than rules)
    eips: dict[str, list[tuple[str, str]]] = {}
    seen_vips: set[str] = set()
    seen_guests: set[str] = set()
    for i, e in enumerate(state.get("eips", [])):
        vip, guest = _ip(e.get("vipIp"), f"eips[{i}].vipIp"), _ip(e.get("guestIp"), f"eips[{i}].guestIp")
        if vip in seen_vips or guest in seen_guests:
            raise StateError(f"eips[{i}]: vip {vip} or guest {guest} is in another eip (one eip per vip and guest)")
        seen_vips.add(vip)
        seen_guests.add(guest)
        eips.setdefault(_ifname(ifnames, e.get("publicNicMac"), f"eips[{i}].publicNicMac"), []).append((vip, guest))
    for pub, pairs in sorted(eips.items()):
        pre.append(f"iifname {_q(pub)} dnat to ip daddr map {{ " + ", ".join(f"{v} : {g}" for v, g in pairs) + " }")
        fwd.append(f"iifname {_q(pub)} ip daddr {{ " + ", ".join(g for _, g in pairs) + " } ct status dnat accept")
        post.append(f"oifname {_q(pub)} snat to ip saddr map {{ " + ", ".join(f"{g} : {v}" for v, g in pairs) +
                    " }")
    lets: dict[tuple[str, str, str], list[tuple[str, int, int]]] = {}
    for i, pf in enumerate(state.get("pfs", [])):
        dnat, key, let = _pf_rules(i, pf, ifnames)
        pre.append(dnat)
        lets.setdefault(key, []).append(let)
    fwd += _pf_accepts(lets)
    for i, s in enumerate(state.get("snat", [])):
        priv = _ifname(ifnames, s.get("privateNicMac"), f"snat[{i}].privateNicMac")
        pub = _ifname(ifnames, s.get("publicNicMac"), f"snat[{i}].publicNicMac")
        cidr = _cidr(s.get("guestCidr"), f"snat[{i}].guestCidr")
        fwd.append(f"iifname {_q(priv)} oifname {_q(pub)} ip saddr {cidr} accept")
        post.append(f"oifname {_q(pub)} ip saddr {cidr} snat to {_ip(s.get('publicIp'), f'snat[{i}].publicIp')}")

    def chain(name: str, hook: str, rules: list[str]) -> list[str]:
        return [f"\tchain {name} {{", f"\t\t{hook}", *(f"\t\t{r}" for r in rules), "\t}"]

    lines = [f"table ip {TABLE}", f"delete table ip {TABLE}", f"table ip {TABLE} {{",
             *chain("input", "type filter hook input priority filter; policy drop;", inp),
             *chain("forward", "type filter hook forward priority filter; policy drop;", fwd),
             *chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", pre),
             *chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", post),
             "}"]
    return "\n".join(lines) + "\n"


def dnsmasq_files(state: dict[str, Any], ifnames: dict[str, str]) -> dict[str, str]:
    """dnsmasq.conf, hosts.dhcp, hosts.option and hosts.dns (empty dict: no DHCP and no DNS, no dnsmasq)."""
    dhcp, dns = state.get("dhcp", []), state.get("dns") or {}
    if not dhcp and not dns.get("nicMacs"):
        return {}
    conf = ["# rendered by the zstack-py router agent", "no-hosts", f"addn-hosts={RUN_DIR}/hosts.dns",
            f"dhcp-hostsfile={RUN_DIR}/hosts.dhcp", f"dhcp-optsfile={RUN_DIR}/hosts.option",
            f"dhcp-leasefile={RUN_DIR}/dnsmasq.leases", f"pid-file={RUN_DIR}/dnsmasq.pid",
            "user=root", "bind-dynamic", "dhcp-authoritative", "log-facility=/var/log/dnsmasq.log"]
    nics = sorted({_ifname(ifnames, e.get("nicMac"), "dhcp.nicMac") for e in dhcp} |
                  {_ifname(ifnames, m, "dns.nicMacs") for m in dns.get("nicMacs", [])})
    conf += [f"interface={n}" for n in nics]
    if dns.get("nicMacs"):
        conf.append("no-resolv")
        conf += [f"server={_ip(u, 'dns.upstreams')}" for u in dns.get("upstreams", [])]
    else:
        conf.append("port=0")
    hosts, opts, names = [], [], []
    ranges: set[tuple[str, str]] = set()
    for i, e in enumerate(sorted(dhcp, key=lambda e: str(e.get("mac")).lower())):
        ip = _ip(e.get("ip"), f"dhcp[{i}].ip")
        prefix = _prefix(e.get("prefix"), f"dhcp[{i}].prefix")
        ranges.add(_network(ip, prefix))
        tag = str(e.get("mac")).lower().replace(":", "")
        hostname = e.get("hostname") or ip.replace(".", "-")
        hosts.append(f"{str(e.get('mac')).lower()},set:{tag},{ip},{hostname},infinite")
        if e.get("gateway"):
            opts.append(f"tag:{tag},option:router,{_ip(e['gateway'], f'dhcp[{i}].gateway')}")
        if e.get("dns"):
            opts.append(f"tag:{tag},option:dns-server," + ",".join(_ip(d, f"dhcp[{i}].dns") for d in e["dns"]))
        names.append(f"{ip} {hostname}")
    conf += [f"dhcp-range={net},static,{mask},infinite" for net, mask in sorted(ranges)]
    return {"dnsmasq.conf": "\n".join(conf) + "\n", "hosts.dhcp": "".join(h + "\n" for h in hosts),
            "hosts.option": "".join(o + "\n" for o in opts), "hosts.dns": "".join(n + "\n" for n in names)}
