"""Namespace and veth plumbing of one L3 network, with pyroute2 (no ``ip`` shell-outs).

Blocking netlink calls; the service runs them in worker threads. Every function is idempotent: it reads
what exists and creates or fixes only what differs.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from flatnet.errors import FlatNetError
from flatnet.model import L3Spec
from flatnet.names import METADATA_IP, dhcp_mac, l3_names


def list_netns() -> set[str]:
    return set(netns.listnetns())


def _link(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def ensure_plumbing(l3: L3Spec, host_netns: str | None) -> None:
    """Namespace, veth into the bridge, DHCP IP with the L3's MAC, 169.254.169.254/32, lo up.

    Raises FlatNetError (404) if the bridge does not exist. Leaves existing correct objects untouched.
    """
    n = l3_names(l3.uuid)
    if n.netns not in list_netns():
        netns.create(n.netns)
    with IPRoute(netns=host_netns) as host:
        br = _link(host, l3.bridge)
        if br is None:
            raise FlatNetError("NET.BRIDGE_NOT_FOUND",
                               f"bridge {l3.bridge} of L3 network {l3.uuid} does not exist on this host; "
                               "create the L2 bridge first", status=404)
        _ensure_veth(host, n.outer, n.inner, n.netns)
        outer = _link(host, n.outer)
        host.link("set", index=outer, master=br, state="up")
    with IPRoute(netns=n.netns) as ns:
        lo = _link(ns, "lo")
        ns.link("set", index=lo, state="up")
        inner = _link(ns, n.inner)
        if inner is None:
            raise FlatNetError("NET.VETH_MISSING", f"veth end {n.inner} vanished from namespace {n.netns}")
        ns.link("set", index=inner, address=dhcp_mac(l3.uuid), state="up")
        _ensure_addrs(ns, inner, {(l3.dhcp_ip, l3.network.prefixlen), (METADATA_IP, 32)})


def _ensure_veth(host: IPRoute, outer: str, inner: str, ns_name: str) -> None:
    outer_idx = _link(host, outer)
    with IPRoute(netns=ns_name) as ns:
        inner_idx = _link(ns, inner)
    if outer_idx is not None and inner_idx is not None:
        return
    if outer_idx is not None:  # orphan outer end (its peer is gone or elsewhere): recreate the pair
        host.link("del", index=outer_idx)
    if inner_idx is not None:
        with IPRoute(netns=ns_name) as ns:
            ns.link("del", index=inner_idx)
    # The outer end joins the L2 bridge: give it a MAC starting with 0xfe (as libvirt does for taps) so it never
    # becomes the bridge's lowest port MAC, which would change the host bridge's own MAC and break the host's
    # management traffic until neighbours re-ARP.
    digest = hashlib.sha256(outer.encode()).digest()
    mac = "fe:" + ":".join(f"{b:02x}" for b in digest[:5])
    host.link("add", ifname=outer, kind="veth", address=mac, peer={"ifname": inner, "net_ns_fd": ns_name})


def _ensure_addrs(ns: IPRoute, index: int, want: set[tuple[str, int]]) -> None:
    have = {(a.get("address"), a["prefixlen"]) for a in ns.get_addr(index=index, family=2)}
    for addr, plen in have - want:
        ns.addr("del", index=index, address=addr, prefixlen=plen)
    for addr, plen in want - have:
        try:
            ns.addr("add", index=index, address=addr, prefixlen=plen)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise


def remove_plumbing(l3_uuid: str, host_netns: str | None) -> None:
    """Remove the veth and the namespace of ``l3_uuid``. Succeeds if they are already gone."""
    n = l3_names(l3_uuid)
    with IPRoute(netns=host_netns) as host:
        idx = _link(host, n.outer)
        if idx is not None:
            host.link("del", index=idx)
    remove_netns(n.netns)


def remove_netns(name: str) -> None:
    if name in list_netns():
        netns.remove(name)


def plumbing_ok(l3: L3Spec, host_netns: str | None) -> bool:
    """True if the namespace, both veth ends and the addresses are all in place."""
    n = l3_names(l3.uuid)
    if n.netns not in list_netns():
        return False
    with IPRoute(netns=host_netns) as host:
        if _link(host, n.outer) is None:
            return False
    with IPRoute(netns=n.netns) as ns:
        idx = _link(ns, n.inner)
        if idx is None:
            return False
        have = {(a.get("address"), a["prefixlen"]) for a in ns.get_addr(index=idx, family=2)}
    return {(l3.dhcp_ip, l3.network.prefixlen), (METADATA_IP, 32)} <= have


def network_of(ip: str, netmask: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{ip}/{netmask}", strict=False)
