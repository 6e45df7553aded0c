"""The tap name is derived in one place (issue #18): ``kvmagent.contract.names.nic_tap_name``, used by the
controller (the NIC's ``internalName``) and by the agent (the domain XML's ``<target dev>``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvmagent.contract.names import nic_tap_name
from kvmagent.driver.names import nic_device_name

ROOT = Path(__file__).resolve().parents[2]


def test_tap_name_format_and_limit() -> None:
    assert nic_tap_name(42, 1) == "vnic42.1"
    assert nic_tap_name(12345678, 9) == "vnic12345678.9"  # 15 characters: the Linux limit
    with pytest.raises(ValueError, match="longer than 15 characters"):
        nic_tap_name(123456789, 10)


def test_agent_uses_the_contract_function() -> None:
    assert nic_device_name is nic_tap_name


def test_no_other_module_derives_a_tap_name() -> None:
    """Nothing in controller/, kvmagent/ or flatnet/ builds ``vnic...`` itself: a second derivation drifts."""
    pattern = re.compile(r"""f["']vnic\{""")
    offenders = [str(p.relative_to(ROOT)) for pkg in ("controller", "kvmagent", "flatnet")
                 for p in sorted((ROOT / pkg).rglob("*.py"))
                 if p != ROOT / "kvmagent/contract/names.py" and pattern.search(p.read_text())]
    assert offenders == []
