"""Shared test configuration.

Tiers (DESIGN.md "Test tiers"): ``tests/unit`` (no host access: the subprocess runner refuses every
command), ``tests/contract`` (libvirt test driver, in-process agents), ``tests/functional`` (root: real
namespaces, dnsmasq, qemu-img, cloud-init) and ``tests/e2e`` (root: the testbed with real guests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import storage.runner

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

    monkeypatch.setattr(storage.runner, "_spawn", refuse)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Root-only tiers fail loudly (not skip) when run without root: a skipped tier hides failures."""
    if os.geteuid() == 0:
        return
    for item in items:
        if "functional" in item.nodeid.split("/") or "e2e" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.xfail(reason="needs root", run=False, strict=True))
