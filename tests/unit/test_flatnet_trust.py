"""Which (L3, source IP) the metadata server may trust: flatnet.service.untrusted_reason (pure)."""

from __future__ import annotations

from flatnet.model import DesiredState, L3Address, L3Spec, NicSpec, UserdataSpec
from flatnet.service import untrusted_reason

L3 = L3Spec(uuid="l3a", bridge="br0", dhcp_ip="10.0.0.2", netmask="255.255.255.0")
NIC = NicSpec(vm_uuid="vm1", l3_uuid="l3a", mac="52:54:00:00:00:01", ip="10.0.0.11", netmask="255.255.255.0",
              tap="vnic1.0")


def _state(l3: L3Spec = L3, nics: tuple[NicSpec, ...] = (NIC,)) -> DesiredState:
    return DesiredState(l3s={l3.uuid: l3}, nics={n.key: n for n in nics})


def test_trusted_nic_with_anti_spoofing() -> None:
    assert untrusted_reason(_state(), "vm1", "l3a", "10.0.0.11") is None


def test_refused_cases() -> None:
    assert "anti-spoofing off" in str(untrusted_reason(_state(L3.model_copy(update={"anti_spoofing": False})),
                                                       "vm1", "l3a", "10.0.0.11"))
    assert "not Flat DHCP" in str(untrusted_reason(_state(nics=()), "vm1", "l3a", "10.0.0.11"))
    assert "not Flat DHCP" in str(untrusted_reason(_state(), "vm2", "l3a", "10.0.0.11"))  # another VM's IP
    assert "not Flat DHCP" in str(untrusted_reason(_state(), "vm1", "l3a", "10.0.0.12"))
    assert "not Flat DHCP" in str(untrusted_reason(_state(nics=(NIC.model_copy(update={"tap": None}),)),
                                                   "vm1", "l3a", "10.0.0.11"))
    assert "not served" in str(untrusted_reason(_state(), "vm1", "l3b", "10.0.0.11"))


def test_served_on_lists_default_l3_first_without_duplicates() -> None:
    spec = UserdataSpec(vm_uuid="vm1", l3_uuid="l3b", vm_ip="10.1.0.5",
                        addresses=(L3Address(l3_uuid="l3a", ip="10.0.0.11"), L3Address(l3_uuid="l3b", ip="10.1.0.5")))
    assert spec.served_on == [("l3b", "10.1.0.5"), ("l3a", "10.0.0.11")]
