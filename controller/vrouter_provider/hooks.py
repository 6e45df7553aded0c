"""The router provider on compute's extension points (the router serves DHCP, DNS, SNAT and EIP).

* ``vm.before_start``: every L3 of a starting user VM that takes one of :data:`ROUTER_SERVICES` from the
  VirtualRouter provider gets its router first (created, started, configured: the whole state, with the
  VM's DHCP entry, is pushed). A failure fails the VM start (the router is needed for the VM's traffic).
  An L3 whose DHCP comes from Flat and SNAT from VirtualRouter (Flat + VR) gets its router for the SNAT only.
* ``vm.stopped`` / ``vm.state_changed`` / ``vm.nic_attached`` / ``vm.nic_detached``: the router of each L3
  concerned is pushed the whole state again (the VM's DHCP entries come and go); a NIC added to a Running
  VM on such an L3 gets the router first, like a start. Pushes run in the L3's queue (``vr-l3-<l3>``), one
  at a time, so the router always ends with the newest state.
* A router VM stopped (by the API or out of band) is marked Disconnected; the health check
  (:mod:`.health`) starts it again.
"""

from __future__ import annotations

import logging
from typing import Any

from controller.compute import extensions
from controller.core import Controller
from controller.vrouter_provider.router import ensure_router, push_l3, vr_services

log = logging.getLogger(__name__)

#: the services a router VM serves (PortForwarding needs SNAT on the L3, so it is covered by SNAT)
ROUTER_SERVICES = frozenset({"DHCP", "DNS", "SNAT", "Eip"})


async def router_l3s(core: Controller, vm_uuid: str) -> list[str]:
    """The VM's L3s (device order) that take a router service from the VirtualRouter provider."""
    rows = await core.db.fetchall("SELECT l3NetworkUuid FROM VmNic WHERE vmInstanceUuid=? AND l3NetworkUuid IS "
                                  "NOT NULL ORDER BY deviceId", (vm_uuid,))
    out: list[str] = []
    for (l3_uuid,) in rows:
        if l3_uuid not in out and await vr_services(core.db, l3_uuid) & ROUTER_SERVICES:
            out.append(l3_uuid)
    return out


async def _before_start(core: Controller, *, host: dict[str, Any], vm: dict[str, Any]) -> None:
    if vm.get("type") != "UserVm":
        return
    for l3_uuid in await router_l3s(core, vm["uuid"]):
        await ensure_router(core, l3_uuid)


async def _repush(core: Controller, vm: dict[str, Any]) -> None:
    for l3_uuid in await router_l3s(core, vm["uuid"]):
        await push_l3(core, l3_uuid)


async def _router_down(core: Controller, vm_uuid: str) -> None:
    async with core.db.write() as tx:
        await tx.execute("UPDATE ApplianceVm SET status='Disconnected' WHERE uuid=?", (vm_uuid,))


async def _stopped(core: Controller, *, host_uuid: str, vm: dict[str, Any]) -> None:
    if vm.get("type") == "ApplianceVm":
        await _router_down(core, vm["uuid"])
    elif vm.get("type") == "UserVm":
        await _repush(core, vm)


async def _state_changed(core: Controller, *, vm_uuid: str, before: str, after: str, old_host: str | None,
                         new_host: str | None) -> None:
    row = await core.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (vm_uuid,))
    if row is None:
        return
    if row["type"] == "ApplianceVm":
        if after != "Running":
            await _router_down(core, vm_uuid)
    elif after in ("Running", "Stopped"):
        await _repush(core, dict(row))


async def _nic_attached(core: Controller, *, host: dict[str, Any], vm: dict[str, Any], nic: dict[str, Any]) -> None:
    l3_uuid = nic.get("l3NetworkUuid")
    if vm.get("type") == "UserVm" and l3_uuid and await vr_services(core.db, l3_uuid) & ROUTER_SERVICES:
        await ensure_router(core, l3_uuid)


async def _nic_detached(core: Controller, *, host: dict[str, Any], vm: dict[str, Any], nic: dict[str, Any]) -> None:
    l3_uuid = nic.get("l3NetworkUuid")
    if vm.get("type") == "UserVm" and l3_uuid and await vr_services(core.db, l3_uuid) & ROUTER_SERVICES:
        await push_l3(core, l3_uuid)


extensions.register_many(vm_before_start=_before_start, vm_stopped=_stopped, vm_state_changed=_state_changed,
                         vm_nic_attached=_nic_attached, vm_nic_detached=_nic_detached)
