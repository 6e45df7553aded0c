"""Unit tests: names, MAC, dnsmasq rendering, option 121, user data rendering and warnings, metadata layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flatnet import dnsmasq, ebtables
from flatnet.mdlayout import resolve
from flatnet.model import L3Spec, NicSpec, UserdataSpec
from flatnet.names import dhcp_mac, l3_names, nic_chain
from flatnet.userdata import render_userdata
from zsutil.userdata import decode_minified, userdata_warnings

SEED = Path("/work/shared/seed/zstack-1.0-release-notes.txt")
L3 = L3Spec(uuid="05266285f96245f096f3b7dce671991d", bridge="br_eth0", uplink="eth0", dhcp_ip="10.0.0.2",
            netmask="255.255.255.0", gateway="10.0.0.1", dns=("8.8.8.8",), dns_domain="zstack.org")
NIC = NicSpec(vm_uuid="v1", l3_uuid=L3.uuid, mac="52:54:00:AA:00:11", ip="10.0.0.11", netmask="255.255.255.0",
              gateway="10.0.0.1", hostname="vm1.zstack.org", tap="vnic1.0")


def test_names_are_deterministic_and_fit_ifnamsiz() -> None:
    n = l3_names(L3.uuid)
    assert n == l3_names(L3.uuid) and len(n.outer) <= 15 and len(n.inner) <= 15
    assert l3_names("other").netns != n.netns
    assert nic_chain("vnic1.0") == "zsas-vnic1.0"
    with pytest.raises(ValueError, match="tapName"):
        nic_chain("x" * 16)


def test_dhcp_mac_is_unicast_local_and_stable() -> None:
    mac = dhcp_mac(L3.uuid)
    first = int(mac.split(":")[0], 16)
    assert mac == dhcp_mac(L3.uuid) and first & 1 == 0 and first & 2 == 2 and mac != dhcp_mac("x")


def test_dnsmasq_files() -> None:
    conf = dnsmasq.render_conf(L3, dnsmasq.DnsmasqPaths(Path("/s")))
    assert "port=0\n" in conf and "dhcp-range=10.0.0.0,static,255.255.255.0,infinite\n" in conf
    assert "dhcp-hostsdir=/s/hosts\n" in conf and "dhcp-leasefile=/s/leases\n" in conf
    assert "quiet-dhcp\n" in conf and "log-dhcp" not in conf  # no line per DHCP exchange
    debug = dnsmasq.render_conf(L3, dnsmasq.DnsmasqPaths(Path("/s")), log_dhcp=True)
    assert "log-dhcp\n" in debug and "quiet-dhcp" not in debug
    assert dnsmasq.host_line(NIC) == "52:54:00:aa:00:11,set:n525400aa0011,10.0.0.11,vm1,infinite\n"
    opts = dnsmasq.opts_lines(NIC, L3).splitlines()
    assert "tag:n525400aa0011,option:router,10.0.0.1" in opts
    assert "tag:n525400aa0011,option:dns-server,8.8.8.8" in opts
    assert ("tag:n525400aa0011,option:classless-static-route,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1"
            in opts)
    other = dnsmasq.opts_lines(NIC.model_copy(update={"default_l3": False}), L3).splitlines()
    assert "tag:n525400aa0011,3" in other and "tag:n525400aa0011,6" in other
    assert other[-1].endswith("classless-static-route,169.254.169.254/32,10.0.0.2")


def test_option_121_wire_encoding() -> None:
    enc = dnsmasq.encode_rfc3442(dnsmasq.nic_routes(NIC, L3))
    assert enc == bytes([32, 169, 254, 169, 254, 10, 0, 0, 2, 0, 10, 0, 0, 1])


def test_bad_input_names_field_and_value() -> None:
    with pytest.raises(ValueError, match="mac 'zz'"):
        NIC.model_validate({**NIC.model_dump(), "mac": "zz"})
    with pytest.raises(ValueError, match=r"dhcpServerIp '10\.0\.0\.300'"):
        L3Spec.model_validate({**L3.model_dump(), "dhcp_ip": "10.0.0.300"})


def test_seed_userdata_decodes_to_real_newlines() -> None:
    line = next(x for x in SEED.read_text().splitlines() if x.startswith("userdata::groups:"))
    raw = line[len("userdata::"):]
    out = render_userdata(raw, ("ssh-rsa AAA k",), "pw")
    assert out == raw.replace("\\n", "\n") and "\\n" not in out and out.startswith("groups:\n - ubuntu: [foo,bar]\n")
    assert decode_minified("a\nb\\nc") == "a\nb\\nc"  # real newlines present: left alone


def test_keys_and_password_become_cloud_config() -> None:
    text = render_userdata(None, ("ssh-rsa AAAA root@yyy",), "p@ss")
    assert text is not None and text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["ssh_authorized_keys"] == ["ssh-rsa AAAA root@yyy"] and doc["disable_root"] is False
    assert doc["chpasswd"] == {"list": "root:p@ss\n", "expire": False} and doc["ssh_pwauth"] is True
    assert "  list: |\n" in text
    assert render_userdata(None, (), None) is None


def test_userdata_warnings() -> None:
    seed = next(x for x in SEED.read_text().splitlines() if x.startswith("userdata::groups:"))
    assert "not a header" in userdata_warnings(decode_minified(seed[len("userdata::"):]))[0]
    assert userdata_warnings("#cloud-config\nusers:\n  - name: a\n") == []
    assert "not valid YAML" in userdata_warnings("#cloud-config\nusers: [\n")[0]
    assert "not a mapping" in userdata_warnings("#cloud-config\n- a\n- b\n")[0]
    assert userdata_warnings("#!/bin/sh\necho hi\n") == []


def test_metadata_layout_is_the_callers_only() -> None:
    spec = UserdataSpec(vm_uuid="v1", l3_uuid=L3.uuid, vm_ip="10.0.0.11", userdata="#cloud-config\n",
                        ssh_keys=("ssh-rsa AAA root@yyy",), hostname="vm1")
    assert resolve(spec, "/latest/user-data") == (200, "#cloud-config\n")
    assert resolve(spec, "/latest/meta-data/public-keys/") == (200, "0=root@yyy")
    assert resolve(spec, "/2009-04-04/meta-data/public-keys/0/openssh-key") == (200, "ssh-rsa AAA root@yyy\n")
    assert resolve(spec, "/latest/public-keys") == (200, "ssh-rsa AAA root@yyy\n")  # lines end with a newline
    assert resolve(spec, "/latest/local-hostname") == (200, "vm1")
    assert resolve(spec, "/latest/meta-data/other")[0] == 404 and resolve(spec, "/../etc")[0] == 404


def test_ebtables_plan_is_idempotent() -> None:
    want = ebtables.desired({L3.uuid: L3}, [NIC])
    have = ebtables.Ruleset(chains={c: list(r) for c, r in want.chains.items()})
    for base, rule in want.jumps:
        have.chains.setdefault(base, []).append(rule)
    assert ebtables.plan(have, want, want.chains) == {}
    gone = ebtables.plan(have, ebtables.desired({}, []), want.chains)
    assert "-X zsas-vnic1.0" in gone["filter"] and "-D FORWARD -i vnic1.0 -j zsas-vnic1.0" in gone["filter"]
    assert gone["nat"] == ["-D PREROUTING -i vnic1.0 -j zsmac-vnic1.0", ":zsmac-vnic1.0 RETURN", "-X zsmac-vnic1.0"]


def test_ebtables_mac_check_is_in_nat_prerouting() -> None:
    """The MAC check must run before the bridge learns the source (nat PREROUTING), see flatnet.ebtables."""
    want = ebtables.desired({L3.uuid: L3}, [NIC])
    first = ebtables.plan(ebtables.Ruleset(), want, [])
    assert first["nat"] == [":zsmac-vnic1.0 RETURN", f"-A zsmac-vnic1.0 -s ! {NIC.mac} -j DROP",
                            "-A PREROUTING -i vnic1.0 -j zsmac-vnic1.0"]
    save = "*filter\n:INPUT ACCEPT\n:FORWARD ACCEPT\n:OUTPUT ACCEPT\n*nat\n:PREROUTING ACCEPT\n:OUTPUT ACCEPT\n" \
           ":POSTROUTING ACCEPT\n:zsmac-vnic1.0 RETURN\n-A PREROUTING -i vnic1.0 -j zsmac-vnic1.0\n" \
           f"-A zsmac-vnic1.0 -s ! {NIC.mac} -j DROP\n"
    have = ebtables.parse_save(save)
    assert have.chains["PREROUTING"] == ["-i vnic1.0 -j zsmac-vnic1.0"] and have.chains["OUTPUT"] == []
    assert "nat" not in ebtables.plan(have, want, [])


def test_uplink_drops_dhcp_of_flat_nics_only() -> None:
    """DHCP crossing the uplink is dropped when it comes from or goes to a NIC the flat dnsmasq serves (and the
    flat DHCP IP's frames never cross); other NICs' DHCP crosses (a router on another host)."""
    other = NicSpec(vm_uuid="v2", l3_uuid=L3.uuid, mac="52:54:00:aa:00:12", ip="10.0.0.12", netmask="255.255.255.0")
    want = ebtables.desired({L3.uuid: L3}, [NIC, other])
    up = want.chains["zsup-eth0"]
    for d in ("-i", "-o"):
        assert f"-p IPv4 {d} eth0 --ip-proto udp --ip-dport 67:68 -j zsupd-eth0" in up
        assert f"-p IPv4 {d} eth0 --ip-src 10.0.0.2 -j DROP" in up
        assert f"-p IPv4 {d} eth0 --ip-dst 169.254.169.254 -j DROP" in up
        assert not any("67:68 -j DROP" in r for r in up)
    assert want.chains["zsupd-eth0"] == ["-s 52:54:00:aa:00:11 -j DROP", "-d 52:54:00:aa:00:11 -j DROP",
                                         "-s 52:54:00:aa:00:12 -j DROP", "-d 52:54:00:aa:00:12 -j DROP"]
    # no flat NIC on the host yet: the DHCP chain exists, empty (every DHCP frame returns from it)
    assert ebtables.desired({L3.uuid: L3}, []).chains["zsupd-eth0"] == []
    assert ("FORWARD", "-j zsup-eth0") in want.jumps
