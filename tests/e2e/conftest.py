"""End-to-end tier fixtures: one 2-host testbed per session, the tiny image, and guest/namespace cleanup.

The session testbed lives in ``$ZSTACK_E2E_TESTBED_DIR`` (default /var/lib/zstack-py-testbed-e2e), with host
prefix ``$ZSTACK_E2E_PREFIX`` (tb) and management network ``$ZSTACK_E2E_MGMT_NET`` (10.99.0). A testbed
left there by a crashed session is torn down before ``up``. At the end of the session ``down`` runs and
the teardown asserts that no namespace, link, mount or process of the testbed is left.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab import (
    REPO,
    SHARED_PS_URL,
    DhcpNamespace,
    Guest,
    Testbed,
    TinyImage,
    bring_up,
    footprint,
    host_shares,
    leftovers,
    tear_down,
    testbed_mode,
    tiny_image,
)

E2E_STATE_DIR = Path(os.environ.get("ZSTACK_E2E_TESTBED_DIR", "/var/lib/zstack-py-testbed-e2e"))
# Two e2e runs on one machine (developers working in parallel) need distinct names and networks too.
E2E_PREFIX = os.environ.get("ZSTACK_E2E_PREFIX", "tb")
E2E_MGMT_NET = os.environ.get("ZSTACK_E2E_MGMT_NET", "10.99.0")
# nspawn (each host boots systemd; the default) or plain (namespaces + plain daemons); see scripts/testbed
E2E_MODE = testbed_mode()


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """A 2-host testbed (prefix tb, management 10.99.0.0/24 unless overridden), up for the whole session."""
    tear_down(E2E_STATE_DIR)  # a crashed earlier session
    tb = bring_up(E2E_STATE_DIR, hosts=2, prefix=E2E_PREFIX, mgmt_net=E2E_MGMT_NET, mode=E2E_MODE,
                  shares=e2e_shares(E2E_MODE, tmp_path_factory.getbasetemp()))
    try:
        yield tb
    finally:
        fp = footprint(tb)
        tear_down(E2E_STATE_DIR)
        left = leftovers(fp)
        assert not left, f"scripts/testbed down left: {left}"


def e2e_shares(mode: str, basetemp: Path) -> tuple[str, ...]:
    """What nspawn hosts must see of this machine, as plain-mode hosts do: the tiny image's directory (added as
    a file:// image), the repository (a test runs its metadata server script inside a host) and, read-write,
    pytest's temporary directory (guests' disks, console logs and SSH keys that tests make) and the shared
    primary storage's directory (SHARED_PS_URL: one file system every host sees)."""
    Path(SHARED_PS_URL).mkdir(parents=True, exist_ok=True)
    return host_shares(mode, ro=(tiny_image().qcow2.parent, REPO), rw=(basetemp, Path(SHARED_PS_URL)))


@pytest.fixture(scope="session")
def tiny() -> TinyImage:
    return tiny_image()


@pytest.fixture
def guests() -> Iterator[list[Guest]]:
    """Append started guests here; each is destroyed and undefined after the test, pass or fail."""
    started: list[Guest] = []
    yield started
    errors = []
    for g in started:
        try:
            g.destroy()
        except Exception as e:
            errors.append(f"{g.name}: {e}")
    assert not errors, f"guest cleanup failed: {errors}"


@pytest.fixture
def dhcp_namespaces() -> Iterator[list[DhcpNamespace]]:
    """Append DhcpNamespace objects (before start()); each is stopped after the test, pass or fail."""
    made: list[DhcpNamespace] = []
    yield made
    for ns in made:
        ns.stop()
