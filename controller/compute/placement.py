"""Which host may report on which VM (issue 18, security 3: cross-host event forgery).

A host's agent token authenticates its reports, but a report names a VM: an agent may report only on VMs
the database places on its own host (``hostUuid``, or ``lastHostUuid`` while ``hostUuid`` is null) or that
the controller has just told that host to receive (:func:`expect_on_host`, held for the duration of the
operation). Anything else is refused (403) and logged, so a compromised host cannot pull another host's VM
(and its root password, keys and user data) onto itself with a forged ``Running``. Reports on VMs that no
row knows change nothing and stay accepted (the tracer ignores them).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from controller.core import Controller

log = logging.getLogger(__name__)
EXPECTED = "placement.expected"  # core.services key: Counter of (host uuid, vm uuid)


def _expected(core: Controller) -> Counter[tuple[str, str]]:
    got: Counter[tuple[str, str]] = core.services.setdefault(EXPECTED, Counter())
    return got


@asynccontextmanager
async def expect_on_host(core: Controller, host_uuid: str, vm_uuid: str) -> AsyncIterator[None]:
    """While the block runs, ``host_uuid`` may report on ``vm_uuid`` although the database places it
    elsewhere (a destination that is receiving the VM)."""
    exp = _expected(core)
    exp[(host_uuid, vm_uuid)] += 1
    try:
        yield
    finally:
        exp[(host_uuid, vm_uuid)] -= 1
        if exp[(host_uuid, vm_uuid)] <= 0:
            del exp[(host_uuid, vm_uuid)]


def placed_here(vm: Any, host_uuid: str) -> bool:
    """The VM row places the VM on ``host_uuid``."""
    return bool(vm["hostUuid"] == host_uuid or (vm["hostUuid"] is None and vm["lastHostUuid"] == host_uuid))


async def may_report(core: Controller, host_uuid: str, vm_uuid: str) -> bool:
    """Whether ``host_uuid``'s agent may report on ``vm_uuid`` (True for VMs no row knows: nothing changes)."""
    vm = await core.db.fetchone("SELECT hostUuid, lastHostUuid FROM VmInstance WHERE uuid=?", (vm_uuid,))
    if vm is None or placed_here(vm, host_uuid) or _expected(core).get((host_uuid, vm_uuid), 0) > 0:
        return True
    log.warning("refused a report on vm %s from host %s: the database places the vm on host %s "
                "(lastHost %s) and the host was not told to receive it", vm_uuid, host_uuid, vm["hostUuid"],
                vm["lastHostUuid"])
    return False
