"""The router provider on compute's extension points: before a user VM starts, every L3 of its NICs that
takes a service from the VirtualRouter provider gets its router (created, started, configured). A failure
fails the VM start (the router is needed for the VM's traffic)."""

from __future__ import annotations

from typing import Any

from controller.compute import extensions
from controller.core import Controller
from controller.vrouter_provider.router import ensure_router, vr_services

#: The services the router serves today. Its DHCP and DNS are rendered (vrouter/render.py) but not yet served
#: end to end (issue 12, unfinished): an L3 taking only those from the VirtualRouter provider gets no router, as
#: before the router existed (its guests get no lease: seed section 13's starting point).
ROUTER_SERVICES = frozenset({"SNAT", "EIP"})


async def _before_start(core: Controller, *, host: dict[str, Any], vm: dict[str, Any]) -> None:
    if vm.get("type") != "UserVm":
        return
    rows = await core.db.fetchall("SELECT DISTINCT l3NetworkUuid FROM VmNic WHERE vmInstanceUuid=? AND "
                                  "l3NetworkUuid IS NOT NULL ORDER BY deviceId", (vm["uuid"],))
    for (l3_uuid,) in rows:
        if await vr_services(core.db, l3_uuid) & ROUTER_SERVICES:
            await ensure_router(core, l3_uuid)


extensions.register("vm.before_start", _before_start)
