"""The agent side of security groups without the kernel: wire → model mapping, refusals before anything
runs, the state file (0600) and what a restart reads back."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from flatnet.secgroup import SgNic, SgRule
from kvmagent.contract.base import AgentError
from kvmagent.contract.secgroup import SecurityGroupApplyCmd, SecurityGroupNicTO, SecurityGroupRuleTO
from kvmagent.handlers.secgroup import apply, to_nic
from kvmagent.secgroup import SecurityGroupService

NIC = SecurityGroupNicTO(vmNicUuid="n1", vmInstanceUuid="v1", internalName="vnic7.0", mac="FA:16:3E:00:00:01",
                         ips=["10.0.0.5"], hostServiceIps=["10.0.0.2"], ingressDefaultPolicy="accept",
                         rules=[SecurityGroupRuleTO(type="Ingress", protocol="TCP", startPort=22, endPort=22,
                                                    addresses=["10.0.0.0/24"])])


def test_wire_to_model() -> None:
    assert to_nic(NIC) == SgNic(tap="vnic7.0", mac="fa:16:3e:00:00:01", ips=("10.0.0.5",), uuid="n1",
                                ingress_default="accept", egress_default="accept", host_service_ips=("10.0.0.2",),
                                rules=(SgRule("Ingress", "TCP", 22, 22, ("10.0.0.0/24",)),))


async def test_a_bad_value_is_a_400_before_any_command(tmp_path: Path) -> None:
    ctx = SimpleNamespace(secgroup=SecurityGroupService(tmp_path))
    bad = NIC.model_copy(update={"internalName": "x; flush ruleset"})
    with pytest.raises(AgentError) as e:
        await apply(ctx, SecurityGroupApplyCmd(generation=1, nics=[bad]))
    assert e.value.status == 400 and "x; flush ruleset" in e.value.message
    assert ctx.secgroup.generation is None and not (tmp_path / "secgroup.json").exists()


async def test_without_the_service_the_endpoint_answers_503() -> None:
    with pytest.raises(AgentError) as e:
        await apply(SimpleNamespace(secgroup=None), SecurityGroupApplyCmd(generation=1))
    assert e.value.status == 503


def test_state_file_round_trip(tmp_path: Path) -> None:
    svc = SecurityGroupService(tmp_path)
    svc.generation, svc.nics, svc.counts = 12, [to_nic(NIC)], {"inet": 9, "bridge": 4}
    svc._save()
    assert stat.S_IMODE((tmp_path / "secgroup.json").stat().st_mode) == 0o600
    again = SecurityGroupService(tmp_path)
    again._load()
    assert (again.generation, again.nics, again.counts) == (12, svc.nics, svc.counts)
    assert again.status() == {"generation": 12, "nicCount": 1, "taps": ["vnic7.0"]}


def test_an_unreadable_state_file_waits_for_the_controller(tmp_path: Path) -> None:
    (tmp_path / "secgroup.json").write_text("{not json")
    svc = SecurityGroupService(tmp_path)
    svc._load()
    assert svc.generation is None and svc.nics == []
