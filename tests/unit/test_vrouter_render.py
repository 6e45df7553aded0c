"""The router agent's rendering (vrouter.render): desired state -> nft rule set and dnsmasq files, against
golden files, and the errors naming the field of a bad state.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_vrouter_render.py`` and
review the diff."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from vrouter import render

GOLDEN = Path(__file__).parent / "golden"
PUB, GUEST = "52:54:00:00:00:01", "52:54:00:00:00:02"
IFNAMES = {PUB: "eth0", GUEST: "eth1"}
NICS = [{"mac": PUB, "ip": "192.168.77.20", "prefix": 24, "gateway": "192.168.77.1", "defaultRoute": True,
         "metaData": 3},
        {"mac": GUEST, "ip": "10.100.0.1", "prefix": 24, "gateway": "10.100.0.1", "metaData": 4}]
SNAT = [{"privateNicMac": GUEST, "publicNicMac": PUB, "publicIp": "192.168.77.20", "guestCidr": "10.100.0.0/24"}]
FULL: dict[str, Any] = {
    "generation": 4, "nics": NICS, "snat": SNAT,
    "dhcp": [{"nicMac": GUEST, "mac": "fa:00:00:00:00:02", "ip": "10.100.0.12", "prefix": 24,
              "gateway": "10.100.0.1", "dns": ["10.100.0.1"], "hostname": "web"},
             {"nicMac": GUEST, "mac": "FA:00:00:00:00:01", "ip": "10.100.0.11", "prefix": 24,
              "gateway": "10.100.0.1", "dns": ["10.100.0.1"]}],
    "dns": {"nicMacs": [GUEST], "upstreams": ["192.168.77.1"]},
    "vips": [{"ip": "192.168.77.50", "prefix": 24, "nicMac": PUB}],
    "eips": [{"vipIp": "192.168.77.50", "guestIp": "10.100.0.12", "publicNicMac": PUB, "privateNicMac": GUEST}],
}
PF = {"vipIp": "192.168.77.60", "guestIp": "10.100.0.12", "publicNicMac": PUB, "privateNicMac": GUEST}
PFS: dict[str, Any] = {
    "generation": 9, "nics": NICS, "snat": SNAT, "vips": [{"ip": "192.168.77.60", "prefix": 24, "nicMac": PUB}],
    "pfs": [  # one port rewritten, from one network only; a range kept; a range shifted port for port
        {**PF, "protocol": "tcp", "vipPortStart": 2222, "vipPortEnd": 2222, "privatePortStart": 22,
         "privatePortEnd": 22, "allowedCidr": "192.168.77.0/28"},
        {**PF, "protocol": "udp", "vipPortStart": 5000, "vipPortEnd": 5009, "privatePortStart": 5000,
         "privatePortEnd": 5009, "allowedCidr": None},
        {**PF, "guestIp": "10.100.0.13", "protocol": "tcp", "vipPortStart": 8080, "vipPortEnd": 8082,
         "privatePortStart": 80, "privatePortEnd": 82},
        # another VIP port range onto overlapping guest ports: one merged element in the forward set
        {**PF, "guestIp": "10.100.0.13", "protocol": "tcp", "vipPortStart": 9081, "vipPortEnd": 9084,
         "privatePortStart": 81, "privatePortEnd": 84}],
}
CASES: dict[str, dict[str, Any]] = {
    "vrouter-snat": {"generation": 1, "nics": NICS, "snat": SNAT},
    "vrouter-full": FULL,
    "vrouter-pf": PFS,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    state = CASES[name]
    files = render.dnsmasq_files(state, IFNAMES)
    text = render.nft_ruleset(state, IFNAMES) + "".join(f"### {k}\n{v}" for k, v in sorted(files.items()))
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"rendering {name} differs from {path}"


def test_nic_plan_sets_the_gateway_only_on_the_default_route_nic() -> None:
    assert render.nic_plan({"nics": NICS}, IFNAMES) == [
        {"ifname": "eth0", "addresses": ["192.168.77.20/24"], "gateway": "192.168.77.1"},
        {"ifname": "eth1", "addresses": ["10.100.0.1/24"], "gateway": None}]


def test_vips_are_extra_addresses_of_their_nic() -> None:
    plan = render.nic_plan(FULL, IFNAMES)
    assert plan[0]["addresses"] == ["192.168.77.20/24", "192.168.77.50/24"]
    assert plan[1]["addresses"] == ["10.100.0.1/24"]


def test_snat_only_needs_no_dnsmasq() -> None:
    assert render.dnsmasq_files(CASES["vrouter-snat"], IFNAMES) == {}


@pytest.mark.parametrize(("state", "field", "value"), [
    ({"nics": [{**NICS[0], "mac": "52:54:00:00:00:09"}]}, "nics[0].mac", "52:54:00:00:00:09"),
    ({"nics": [{**NICS[0], "ip": "10.0.0.300"}]}, "nics[0].ip", "10.0.0.300"),
    ({"nics": [{**NICS[0], "prefix": 33}]}, "nics[0].prefix", "33"),
    ({"snat": [{**SNAT[0], "guestCidr": "10.0.0.0/40"}]}, "snat[0].guestCidr", "10.0.0.0/40"),
    ({"snat": [{**SNAT[0], "publicIp": "x"}]}, "snat[0].publicIp", "x"),
    ({"eips": [{**FULL["eips"][0], "guestIp": "1.2.3"}]}, "eips[0].guestIp", "1.2.3"),
    ({"eips": [{**FULL["eips"][0], "vipIp": "010.0.0.1"}]}, "eips[0].vipIp", "010.0.0.1"),
    ({"eips": [FULL["eips"][0], {**FULL["eips"][0], "vipIp": "192.168.77.51"}]}, "eips[1]", "10.100.0.12"),
    ({"eips": [{**FULL["eips"][0], "vipIp": "1.2.3.4\n"}]}, "eips[0].vipIp", "1.2.3.4"),
    ({"eips": [{**FULL["eips"][0], "vipIp": 16909060}]}, "eips[0].vipIp", "16909060"),
    ({"nics": NICS, "vips": [{"ip": "192.168.77.50", "prefix": 24, "nicMac": "aa:bb:cc:dd:ee:ff"}]},
     "vips[0].nicMac", "aa:bb:cc:dd:ee:ff"),
    ({"pfs": [{**PFS["pfs"][0], "protocol": "icmp"}]}, "pfs[0].protocol", "icmp"),
    ({"pfs": [{**PFS["pfs"][0], "vipPortStart": 0}]}, "pfs[0].vipPortStart", "0"),
    ({"pfs": [{**PFS["pfs"][0], "privatePortEnd": 70000}]}, "pfs[0].privatePortEnd", "70000"),
    ({"pfs": [{**PFS["pfs"][0], "privatePortEnd": 23}]}, "pfs[0]", "22-23"),
    ({"pfs": [{**PFS["pfs"][0], "allowedCidr": "10.0.0.0/40"}]}, "pfs[0].allowedCidr", "10.0.0.0/40"),
    ({"pfs": [{**PFS["pfs"][0], "guestIp": "10.0.0"}]}, "pfs[0].guestIp", "10.0.0"),
    ({"pfs": [{**PFS["pfs"][0], "publicNicMac": "aa:bb:cc:dd:ee:ff"}]}, "pfs[0].publicNicMac", "aa:bb:cc:dd:ee:ff"),
])
def test_bad_state_names_the_field_and_value(state: dict[str, Any], field: str, value: str) -> None:
    with pytest.raises(render.StateError) as e:
        render.nic_plan(state, IFNAMES)
        render.nft_ruleset(state, IFNAMES)
    assert field in str(e.value) and value in str(e.value)


def test_interface_names_cannot_inject_rules() -> None:
    """Interface names come from the router's own /sys; even so they are quoted in the rule set."""
    text = render.nft_ruleset({"snat": SNAT}, {PUB: "eth0", GUEST: "eth1"})
    assert 'iifname "eth1" oifname "eth0" ip saddr 10.100.0.0/24 accept' in text
    assert 'oifname "eth0" ip saddr 10.100.0.0/24 snat to 192.168.77.20' in text


def test_arp_probe_frames() -> None:
    """kvmagent.arpprobe: the probe it sends (RFC 5227: sender IP 0.0.0.0) and which frames name a holder."""
    from kvmagent import arpprobe

    own, other = bytes.fromhex("fa1600000001"), bytes.fromhex("525400abcdef")
    frame = arpprobe.probe_frame(own, "10.0.0.9")
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == own and frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01" and frame[28:32] == b"\0\0\0\0" and frame[38:42] == bytes([10, 0, 0, 9])
    # our own probe looped back: nobody
    assert arpprobe.holder(frame, "10.0.0.9", own) is None
    reply = (own + other + b"\x08\x06" + bytes.fromhex("0001080006040002") + other + bytes([10, 0, 0, 9]) + own
             + b"\0\0\0\0")
    assert arpprobe.holder(reply, "10.0.0.9", own) == "52:54:00:ab:cd:ef"
    assert arpprobe.holder(reply, "10.0.0.8", own) is None          # someone else's address
    assert arpprobe.holder(reply[:30], "10.0.0.9", own) is None     # truncated
    assert arpprobe.holder(reply[:12] + b"\x08\x00" + reply[14:], "10.0.0.9", own) is None   # not ARP
