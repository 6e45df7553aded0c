"""Shared test configuration.

Tiers (DESIGN.md "Test tiers"): ``tests/unit`` (no host access: the subprocess runner refuses every
command), ``tests/contract`` (libvirt test driver, in-process agents), ``tests/functional`` (root: real
namespaces, dnsmasq, qemu-img, cloud-init) and ``tests/e2e`` (root: the testbed with real guests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from roottiers import root_tier_error

import zsutil.runner

TESTS = Path(__file__).parent


def _tier(request: pytest.FixtureRequest) -> str:
    rel = Path(str(request.node.fspath)).resolve().relative_to(TESTS.resolve())
    return rel.parts[0]


@pytest.fixture(autouse=True)
def _refuse_host_commands_in_unit_tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the unit tier every external command is refused, so a unit test can never touch the host."""
    if _tier(request) != "unit" or request.node.get_closest_marker("host"):
        return

    async def refuse(argv, **kw):  # type: ignore[no-untyped-def]
        raise AssertionError(f"unit test tried to run a host command: {list(argv)!r}")

    monkeypatch.setattr(zsutil.runner, "_spawn", refuse)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Root-only tiers fail loudly (an error, not a skip or xfail) when run without root, before any of
    their fixtures (the testbed) start: a skipped tier hides failures."""
    error = root_tier_error(item.nodeid, os.geteuid())
    if error is not None:
        pytest.fail(error, pytrace=False)
