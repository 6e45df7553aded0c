"""Extension points of the VM and host lifecycle (ZStack's extension points, reduced to named hooks).

Other controller packages (the flat network provider, storage) register coroutines here instead of being
called by name from the compute code, so compute does not depend on them:

    register("vm.before_start", fn)     fn(core, host=..., vm=...)          before /vm/start; raising fails the start
    register("vm.start_failed", fn)     fn(core, host=..., vm=...)          undo of before_start (errors logged)
    register("vm.stopped", fn)          fn(core, host_uuid=..., vm=...)     the VM no longer runs on that host
                                                                             (API stop, destroy, rollback)
    register("vm.destroyed", fn)        fn(core, vm=...)                    after DestroyVmInstance
    register("vm.state_changed", fn)    fn(core, vm_uuid=..., before=..., after=..., old_host=..., new_host=...)
                                                                             a change found by the tracer (out of band)
    register("host.connected", fn)      fn(core, host=...)                  end of the connect sequence; raising
                                                                             fails the connect (1.0: DHCP rebuild)
    register("vm.nic_attached", fn)     fn(core, host=..., vm=..., nic=...) a NIC was added to a Running VM, before
                                                                             the hot-plug; raising fails the attach
    register("vm.nic_detached", fn)     fn(core, host=..., vm=..., nic=...) a NIC was unplugged from a Running VM and
                                                                             its row removed (errors logged)
    register("vm.lost", fn)             fn(core, vm_uuid=..., host_uuid=...) a host's full state sync found a VM
                                                                             that should run there stopped (host
                                                                             reboot or crash; not an event)

``vm`` is the VmInstance row as a dict. Hooks run in registration order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Hook = Callable[..., Awaitable[None]]
HOOKS: dict[str, list[Hook]] = {}
NAMES = ("vm.before_start", "vm.start_failed", "vm.stopped", "vm.destroyed", "vm.state_changed", "host.connected",
         "vm.nic_attached", "vm.nic_detached", "vm.lost")


def register(name: str, fn: Hook) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown extension point {name!r}; known: {NAMES}")
    if fn not in HOOKS.setdefault(name, []):
        HOOKS[name].append(fn)


def register_many(**hooks: Hook) -> None:
    """Register one hook per extension point, in keyword order; a keyword is the point's name with its dot
    written ``_`` (``vm_before_start=fn`` is ``register("vm.before_start", fn)``). A network service (flat
    DHCP/user data, security groups) follows the VM lifecycle with one such call."""
    for key, fn in hooks.items():
        register(key.replace("_", ".", 1), fn)


async def run(name: str, core: Any, **kw: Any) -> None:
    """Run every hook of ``name``; the first exception propagates (the operation fails)."""
    for fn in HOOKS.get(name, []):
        await fn(core, **kw)


async def run_quietly(name: str, core: Any, **kw: Any) -> None:
    """Run every hook of ``name``; exceptions are logged and the other hooks still run (release paths)."""
    for fn in HOOKS.get(name, []):
        try:
            await fn(core, **kw)
        except Exception:
            log.exception("extension %s of %s failed", getattr(fn, "__qualname__", fn), name)
