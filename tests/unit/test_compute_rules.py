"""Pure rules of controller/compute: 1.0's VM state machine, per-API allowed states, sizes, tags, names."""

from __future__ import annotations

import pytest

from controller.compute.connect import l2_bridge, parse_size
from controller.compute.hosts import check_management_ip
from controller.compute.statemachine import ALLOWED, TRANSITIONS, check_allowed, next_state
from controller.compute.tracer import AGENT_TO_VM
from controller.compute.vmcreate import static_ips
from controller.errors import ApiError, InvalidArgument, StateConflict


@pytest.mark.parametrize(("state", "event", "to"), [
    ("Created", "starting", "Starting"), ("Starting", "running", "Running"), ("Running", "stopping", "Stopping"),
    ("Stopping", "stopped", "Stopped"), ("Stopped", "starting", "Starting"), ("Running", "rebooting", "Rebooting"),
    ("Rebooting", "running", "Running"), ("Unknown", "stopped", "Stopped"), ("Destroying", "destroyed", "Destroyed"),
    ("Destroyed", "stopped", "Stopped"), ("Migrating", "migrated", "Running"),
])
def test_transitions_of_1_0(state: str, event: str, to: str) -> None:
    assert next_state(state, event) == to


@pytest.mark.parametrize(("state", "event"), [("Created", "running"), ("Destroyed", "starting"),
                                              ("Expunging", "stopped"), ("Error", "running"),
                                              ("Stopped", "rebooting")])
def test_pairs_outside_the_table_are_internal_errors(state: str, event: str) -> None:
    with pytest.raises(ApiError) as e:
        next_state(state, event)
    assert e.value.status == 500 and state in e.value.details and event in e.value.details


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == {"Created", "Starting", "Running", "Stopping", "Stopped", "Rebooting", "Destroying",
                                "Destroyed", "Migrating", "Expunging", "Error", "Unknown"}


@pytest.mark.parametrize(("api", "state"), [("StartVmInstance", "Running"), ("StopVmInstance", "Destroyed"),
                                            ("RebootVmInstance", "Stopped"), ("GetVmConsoleAddress", "Stopped"),
                                            ("StartVmInstance", "Unknown"), ("RebootVmInstance", "Starting")])
def test_forbidden_operation_is_vm_1010(api: str, state: str) -> None:
    with pytest.raises(StateConflict) as e:
        check_allowed("a" * 32, state, api)
    assert e.value.code == "VM.1010" and e.value.status == 409
    assert f"state[{state}]" in e.value.details and api in e.value.details and str(ALLOWED[api]) in e.value.details


def test_allowed_operations_pass() -> None:
    for api, states in ALLOWED.items():
        for s in states:
            check_allowed("a" * 32, s, api)


def test_agent_states_map_like_1_0() -> None:
    assert AGENT_TO_VM == {"Running": "Running", "Stopped": "Stopped", "Paused": "Unknown", "Crashed": "Unknown",
                           "Unknown": "Unknown"}


@pytest.mark.parametrize(("text", "n"), [("512M", 512 << 20), ("1G", 1 << 30), ("2048", 2048), ("4k", 4096),
                                         ("1GB", 1 << 30)])
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


def test_parse_size_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_static_ip_tags() -> None:
    assert static_ips(["staticIp::" + "b" * 32 + "::10.0.0.5", "hostname::x"]) == {"b" * 32: "10.0.0.5"}
    assert static_ips(None) == {}


@pytest.mark.parametrize("ip", ["10.0.0.1", "host-1.example.com", "kvm1"])
def test_management_ip_accepts_ipv4_and_hostnames(ip: str) -> None:
    check_management_ip(ip)


@pytest.mark.parametrize("ip", ["10.0.0.300", "1.2.3", "bad_name!", "-lead.example.com", "::1"])
def test_management_ip_refuses_the_rest(ip: str) -> None:
    with pytest.raises(InvalidArgument, match="managementIp"):
        check_management_ip(ip)


def test_bridge_from_tag_else_1_0_rule() -> None:
    assert l2_bridge({"tag": "kvm::bridge::br_x", "physicalInterface": "eth0", "vlan": None}) == "br_x"
    assert l2_bridge({"tag": None, "physicalInterface": "eth0", "vlan": None}) == "br_eth0"
    assert l2_bridge({"tag": None, "physicalInterface": "eth0", "vlan": 10}) == "br_eth0_10"
