"""Golden-file tests of the security-group renderer (``flatnet.secgroup``) and its input checks.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_secgroup_render.py`` and
review the diff. tests/functional/test_secgroup_enforce.py loads these shapes into a real kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flatnet.secgroup import RuleSetError, SgNic, SgRule, chain_names, parse_generation, render

GOLDEN = Path(__file__).parent / "golden"

WEB = SgNic(tap="vnic12.0", mac="fa:16:3e:00:00:01", ips=("10.0.0.5",), host_service_ips=("10.0.0.2",),
            uuid="nic-web", rules=(
                SgRule("Ingress", "TCP", 22, 22, ("10.0.0.0/24", "10.0.0.9")),
                SgRule("Ingress", "TCP", 8000, 8080, ("0.0.0.0/0",)),
                SgRule("Ingress", "ICMP", 8, 0, ("0.0.0.0/0",)),
                SgRule("Ingress", "UDP", 1000, 2000, ("192.168.1.0/24", "fd00::/64")),
                SgRule("Ingress", "ICMP", -1, -1, ("172.16.0.0/12",))))
LOCKED = SgNic(tap="vnic13.0", mac="fa:16:3e:00:00:02", ips=("10.0.0.6",), uuid="nic-locked", rules=(
    SgRule("Egress", "TCP", 443, 443, ("0.0.0.0/0",)),
    SgRule("Egress", "ALL", -1, -1, ("10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.4/30")),
    SgRule("Ingress", "TCP", 22, 22, ())))  # a remote group without members: matches nothing
OPEN = SgNic(tap="vnic14.1", mac="fa:16:3e:00:00:03", ips=("10.0.1.7", "fd00::7"), ingress_default="accept",
             anti_spoofing=False, uuid="nic-open")

CASES = {
    "secgroup-empty": ([], 1),
    "secgroup-default-deny": ([SgNic(tap="vnic1.0", mac="fa:16:3e:00:00:09", ips=("10.0.0.9",))], 2),
    "secgroup-mixed": ([OPEN, LOCKED, WEB], 41),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    nics, gen = CASES[name]
    text = render(nics, gen).text
    path = GOLDEN / f"{name}.nft"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"rule set {name} differs from {path}"


def test_the_order_of_nics_does_not_change_the_text() -> None:
    assert render([WEB, LOCKED, OPEN], 3).text == render([OPEN, WEB, LOCKED], 3).text


def test_replacement_is_one_transaction_of_both_tables() -> None:
    head = render([WEB], 5).text.splitlines()[:4]
    assert head == ["table inet zstack_sg", "delete table inet zstack_sg", "table bridge zstack_sg",
                    "delete table bridge zstack_sg"]


def test_rule_counts_match_the_script() -> None:
    r = render([WEB, LOCKED, OPEN], 9)
    inet, bridge = r.text.split("table bridge zstack_sg {")
    body = [ln.strip() for ln in inet.split("table inet zstack_sg {")[1].splitlines()]
    rules = [ln for ln in body if ln and not ln.startswith(("chain", "}", "comment", "type "))]
    assert r.rule_counts["inet"] == len(rules)
    brules = [ln.strip() for ln in bridge.splitlines() if ln.strip().startswith(("meta", "iifname", "oifname"))]
    assert r.rule_counts["bridge"] == len(brules)


def test_generation_round_trip() -> None:
    text = render([WEB], 1234).text
    assert 'comment "zstack-py security groups generation 1234"' in text
    assert parse_generation("zstack-py security groups generation 1234") == 1234
    assert parse_generation("something else") is None and parse_generation(None) is None


def _chain(text: str, name: str) -> list[str]:
    lines = text.split(f"\tchain {name} {{\n")[1].split("\n\t}")[0]
    return [ln.strip() for ln in lines.splitlines()]


def test_default_policies() -> None:
    deny = render([SgNic(tap="t1", mac="fa:16:3e:00:00:01", ips=("10.0.0.1",))], 1).text
    assert _chain(deny, "in_t1")[-1] == "drop"
    assert _chain(deny, "out_t1")[-1] == "return"
    egress_deny = SgNic(tap="t1", mac="fa:16:3e:00:00:01", ips=("10.0.0.1",), egress_default="deny",
                        ingress_default="accept")
    text = render([egress_deny], 1).text
    assert _chain(text, "out_t1")[-1] == "drop"
    assert _chain(text, "in_t1")[-1] == "return"


def test_rules_make_their_direction_a_whitelist() -> None:
    """1.0: with ingress rules, anything unmatched is denied even when the default is accept."""
    nic = SgNic(tap="t1", mac="fa:16:3e:00:00:01", ips=("10.0.0.1",), ingress_default="accept",
                rules=(SgRule("Ingress", "TCP", 22, 22, ("10.0.0.0/8",)), SgRule("Egress", "UDP", 53, 53)))
    text = render([nic], 1).text
    assert _chain(text, "in_t1")[-2:] == ["ip saddr 10.0.0.0/8 tcp dport 22 return", "drop"]
    assert _chain(text, "out_t1")[-2:] == ["meta nfproto ipv4 udp dport 53 return", "drop"]


def test_icmp_type_and_code_are_kept_as_given() -> None:
    """1.0 sorted (type, code) into (min, max): type 8 code 0 became 0/8 (echo reply). Not copied."""
    nic = SgNic(tap="t1", mac="fa:16:3e:00:00:01", ips=("10.0.0.1",),
                rules=(SgRule("Ingress", "ICMP", 8, 0, ("0.0.0.0/0",)),))
    assert "icmp type 8 icmp code 0 return" in render([nic], 1).text


def test_overlapping_addresses_are_collapsed() -> None:
    nic = SgNic(tap="t1", mac="fa:16:3e:00:00:01", ips=("10.0.0.1",),
                rules=(SgRule("Ingress", "TCP", 22, 22, ("10.0.0.0/24", "10.0.0.5", "10.0.1.0/24")),))
    assert "ip saddr 10.0.0.0/23 tcp dport 22 return" in render([nic], 1).text


def test_chain_names_are_not_truncated() -> None:
    assert chain_names("vnic123456.10") == ("in_vnic123456_10", "out_vnic123456_10")


@pytest.mark.parametrize("nic,needle", [
    (SgNic(tap='x" ; flush ruleset', mac="fa:16:3e:00:00:01", ips=()), "tap name"),
    (SgNic(tap="vnic1.0", mac="FA-16", ips=()), "mac 'FA-16'"),
    (SgNic(tap="vnic1.0", mac="fa:16:3e:00:00:01", ips=("10.0.0.300",)), "'10.0.0.300' is not an IP"),
    (SgNic(tap="vnic1.0", mac="fa:16:3e:00:00:01", ips=(), ingress_default="maybe"), "default policy"),  # type: ignore[arg-type]
    (SgNic(tap="vnic1.0", mac="fa:16:3e:00:00:01", ips=(), rules=(SgRule("Ingress", "TCP", 1, 70000),)),
     "out of range"),
    (SgNic(tap="vnic1.0", mac="fa:16:3e:00:00:01", ips=(), rules=(SgRule("Ingress", "ICMP", 300, 0),)),
     "ICMP type/code 300/0"),
    (SgNic(tap="vnic1.0", mac="fa:16:3e:00:00:01", ips=(), rules=(SgRule("Ingress", "GRE", 1, 1),)),  # type: ignore[arg-type]
     "unknown protocol"),
    (SgNic(tap="vnic1.0", mac="fa:16:3e:00:00:01", ips=(), rules=(SgRule("Sideways", "TCP", 1, 1),)),  # type: ignore[arg-type]
     "unknown rule type"),
    (SgNic(tap="vnic1.0", mac="fa:16:3e:00:00:01", ips=(),
           rules=(SgRule("Ingress", "TCP", 1, 1, ("10.0.0.0/8; drop",)),)), "is not an IP address or CIDR"),
])
def test_bad_values_are_refused_naming_nic_and_value(nic: SgNic, needle: str) -> None:
    with pytest.raises(RuleSetError) as e:
        render([nic], 1)
    assert needle in str(e.value)


def test_a_tap_given_twice_is_refused() -> None:
    with pytest.raises(RuleSetError, match="given more than once"):
        render([WEB, WEB], 1)
