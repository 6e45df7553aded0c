"""Before a new router takes its addresses: is any of them already used on its L2? (1.0 pinged the
management IP from the management node and refused with APPLIANCE_VM.1000; that needs a route from the
controller to every management network, the very requirement the router's channel removes.)

The router's host ARP-probes each address on the bridge the NIC will be plugged into (``/vrouter/probeips``,
RFC 5227 probes, all at once, bounded by :data:`PROBE_TIMEOUT`). A pool address that answers is skipped: the
NIC gets another address of its L3 (up to :data:`MAX_SKIPS` times, then APPLIANCE_VM.1000). The guest
gateway a router takes with SNAT cannot be skipped: an answer means a physical router or another router
owns it, and the creation is refused (two gateways on one L2 would split the guests' traffic). A host that
cannot probe (no bridge yet, an older agent) is logged and the creation goes on, as 1.0 did when its ping
got no answer.
"""

from __future__ import annotations

import logging
from typing import Any

from controller.compute.vmstart import nic_tos
from controller.core import Controller
from controller.errors import ApiError, OperationError
from controller.resources import ipam
from controller.util import now_iso
from kvmagent.contract.vrouter import IpProbe, VRouterProbeIpsCmd

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.5
MAX_SKIPS = 3


async def check_addresses(core: Controller, host: dict[str, Any], vm_uuid: str) -> None:
    """Probe the router ``vm_uuid``'s addresses from ``host``; skip (re-allocate) or refuse those in use."""
    for attempt in range(MAX_SKIPS + 1):
        nics = {r["mac"]: dict(r) for r in await core.db.fetchall(
            "SELECT * FROM VmNic WHERE vmInstanceUuid=? AND ip IS NOT NULL", (vm_uuid,))}
        tos = [t for t in await nic_tos(core, vm_uuid) if t.ip and t.mac in nics]
        if not tos:
            return
        try:
            reply = await core.services["agents"].call(host, VRouterProbeIpsCmd(
                probes=[IpProbe.model_validate({"bridgeName": t.bridgeName, "ip": t.ip}) for t in tos],
                timeout=PROBE_TIMEOUT), timeout=30)
        except ApiError as e:
            log.warning("router %s: host %s cannot probe its addresses (%s); not checked", vm_uuid, host["uuid"],
                        e.details)
            return
        for r in reply.results:
            if not r.probed:
                log.info("router %s: no bridge %s on host %s yet; %s not probed", vm_uuid, r.bridgeName,
                         host["uuid"], r.ip)
        taken = [(r, next(n for n in nics.values() if n["ip"] == r.ip)) for r in reply.results if r.mac]
        if not taken:
            return
        for r, nic in taken:
            if nic["usedIpUuid"] is None:   # the gateway it takes with SNAT
                raise OperationError(
                    f"the gateway IP[{r.ip}] of L3 network[uuid:{nic['l3NetworkUuid']}] is used by another device "
                    f"(MAC {r.mac} answers on bridge {r.bridgeName} of host[uuid:{host['uuid']}]); with SNAT the "
                    "virtual router owns the gateway of the L3's first IP range: free that address or use an L3 "
                    "whose gateway no physical router holds", code="APPLIANCE_VM.1000")
            if attempt == MAX_SKIPS:
                raise OperationError(
                    f"the management nic IP[{r.ip}] has been occupied by another device in the data center (MAC "
                    f"{r.mac} answers ARP on bridge {r.bridgeName} of host[uuid:{host['uuid']}]), and so were "
                    f"{MAX_SKIPS} other addresses tried", code="APPLIANCE_VM.1000")
            log.warning("router %s: %s on L3 %s answers ARP (MAC %s): skipped, taking another address", vm_uuid,
                        r.ip, nic["l3NetworkUuid"], r.mac)
            async with core.db.write() as tx:
                used = await ipam.allocate(tx, nic["l3NetworkUuid"], used_for="VmNic")
                await tx.update("VmNic", {"uuid": nic["uuid"]}, {
                    "ip": used["ip"], "usedIpUuid": used["uuid"], "netmask": used["netmask"],
                    "gateway": used["gateway"], "lastOpDate": now_iso()})
                await ipam.release(tx, nic["usedIpUuid"])
