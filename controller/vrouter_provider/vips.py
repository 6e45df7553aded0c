"""What EIP and port forwarding share (reference virtual-router.md §2): a VIP taken by a service, the checks
of a guest NIC a VIP may map to, and the pushes to the routers a VIP change concerns.

* A VIP serves one service (``useFor`` Eip or PortForwarding: 1.0's "has been occupied other network service
  entity") and one guest L3 (``peerL3NetworkUuid``: "has been serving l3Network ..., can't serve ...").
* A guest NIC for a VIP: exists (404), is not on the VIP's L3 (400), its L3 takes the service *and* SNAT from
  the VirtualRouter provider (409: 1.0 refuses Eip / PortForwarding without SNAT when the services are
  attached; checked here too since the L3's services may have changed since), and the L3's router (or the
  offering that will make it) has the VIP's L3 as its public network (409, 1.0's offering veto).
* AttachNetworkServiceToL3Network: VirtualRouter Eip or PortForwarding needs VirtualRouter SNAT on the L3,
  attached already or in the same request (1.0's message, typo included); DetachNetworkServiceFromL3Network
  cannot take SNAT away from them (409; 1.0 did not check). The change is refused whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from controller.api.context import ApiContext
from controller.db.database import Tx
from controller.errors import ApiError, InvalidArgument, NotFound, OperationError
from controller.resources.network_service import check_services_changed
from controller.util import now_iso
from controller.vrouter_provider.offering import offering_for
from controller.vrouter_provider.router import push_state, router_of, vr_services


async def enabled_vip(ctx: ApiContext, vip_uuid: str, shared_with: str | None) -> dict[str, Any]:
    """The VIP ``vip_uuid``, Enabled and serving nothing or only ``shared_with`` (a service whose entities
    may share a VIP: PortForwarding; an EIP takes its VIP alone)."""
    vip = await ctx.require("Vip", vip_uuid, "vipUuid")
    if vip["state"] != "Enabled":
        raise OperationError(f"vip[uuid:{vip_uuid}] is {vip['state']}, not Enabled")
    if vip["useFor"] and vip["useFor"] != shared_with:
        raise OperationError(f"vip[uuid:{vip['uuid']}] has been occupied other network service entity"
                             f"[{vip['useFor']}]")
    return vip


async def check_guest_nic(ctx: ApiContext, vip: dict[str, Any], nic_uuid: str, field: str,
                          service: str) -> dict[str, Any]:
    """The NIC ``nic_uuid`` if ``service`` (Eip or PortForwarding) on ``vip`` may map to it (1.0's rules)."""
    nic = await ctx.db.fetchone("SELECT * FROM VmNic WHERE uuid=?", (nic_uuid,))
    if nic is None:
        raise NotFound(f"invalid field[{field}], resource[uuid:{nic_uuid}, type:VmNicVO] not found")
    l3 = nic["l3NetworkUuid"]
    if l3 == vip["l3NetworkUuid"]:
        raise InvalidArgument(f"invalid field[{field}]: vm nic[uuid:{nic_uuid}] is on the vip's L3 network"
                              f"[uuid:{vip['l3NetworkUuid']}]; a vip maps to a nic of another L3 network")
    services = await vr_services(ctx.db, l3)
    if service not in services:
        raise OperationError(f"L3 network[uuid:{l3}] of vm nic[uuid:{nic_uuid}] has no {service} "
                             "service of the VirtualRouter provider")
    if "SNAT" not in services:
        raise OperationError(f"L3 network[uuid:{l3}] of vm nic[uuid:{nic_uuid}] has the {service} service but no "
                             f"SNAT service of the VirtualRouter provider; {service} needs SNAT (attach SNAT to "
                             "the L3 network)")
    if vip["peerL3NetworkUuid"] and vip["peerL3NetworkUuid"] != l3:
        raise OperationError(f"vip[uuid:{vip['uuid']}] has been serving l3Network[uuid:{vip['peerL3NetworkUuid']}], "
                             f"can't serve l3Network[uuid:{l3}]")
    await _check_public(ctx, vip, l3)
    return dict(nic)


async def _check_public(ctx: ApiContext, vip: dict[str, Any], l3_uuid: str) -> None:
    """The guest L3's router (or the offering that will create it) must hold the VIP's L3 as public network."""
    vr = await router_of(ctx.db, l3_uuid)
    if vr is not None:
        public, what = vr["publicNetworkUuid"], f"virtual router[uuid:{vr['uuid']}]"
    else:
        l3 = await ctx.db.fetchone("SELECT * FROM L3Network WHERE uuid=?", (l3_uuid,))
        try:
            off = await offering_for(ctx.db, dict(l3)) if l3 is not None else None
        except ApiError:
            return   # no offering yet: the router cannot be made; the VM start says so (VR.1002)
        if off is None:
            return
        public, what = off["publicNetworkUuid"], f"virtual router offering[uuid:{off['uuid']}]"
    if public != vip["l3NetworkUuid"]:
        raise OperationError(f"vip[uuid:{vip['uuid']}] is on L3 network[uuid:{vip['l3NetworkUuid']}] but the "
                             f"{what} of l3Network[uuid:{l3_uuid}] has public network[uuid:{public}]; create the "
                             "vip on that network, or give the guest L3 an offering tagged "
                             f"guestL3Network::{l3_uuid} with this public network")


async def guest_l3s_of_vip(ctx: ApiContext, vip_uuid: str) -> set[str]:
    """The guest L3s of the NICs the VIP's EIPs and port-forwarding rules map to."""
    rows = await ctx.db.fetchall(
        "SELECT n.l3NetworkUuid FROM Eip e JOIN VmNic n ON n.uuid = e.vmNicUuid WHERE e.vipUuid=? UNION "
        "SELECT n.l3NetworkUuid FROM PortForwardingRule p JOIN VmNic n ON n.uuid = p.vmNicUuid WHERE p.vipUuid=?",
        (vip_uuid, vip_uuid))
    return {r[0] for r in rows}


async def push(ctx: ApiContext, l3s: set[str]) -> None:
    """Push the whole state to the running router of each guest L3."""
    for l3 in sorted(l3s):
        vr = await router_of(ctx.db, l3)
        if vr is not None and vr["state"] == "Running":
            await push_state(ctx.core, vr)


async def unbind(ctx: ApiContext, table: str, row: dict[str, Any], *, delete: bool,
                 release_vip: Callable[[Tx, str], Awaitable[None]]) -> None:
    """Detach an EIP or port-forwarding rule from its NIC (``delete`` False) or delete it, and release its VIP
    as ``release_vip`` says, in one transaction; then push the routers of the guest L3s it served."""
    l3s = await guest_l3s_of_vip(ctx, row["vipUuid"])
    async with ctx.db.write() as tx:
        if delete:
            await tx.execute(f"DELETE FROM {table} WHERE uuid=?", (row["uuid"],))
        else:
            await tx.update(table, {"uuid": row["uuid"]}, {"vmNicUuid": None, "guestIp": None,
                                                          "lastOpDate": now_iso()})
        await release_vip(tx, row["vipUuid"])
    await push(ctx, l3s)


async def _snat_with_eip_pf(tx: Tx, l3_uuid: str, action: str) -> None:
    rows = await tx.fetchall(
        "SELECT r.networkServiceType FROM NetworkServiceL3NetworkRef r JOIN NetworkServiceProvider p "
        "ON p.uuid = r.networkServiceProviderUuid WHERE r.l3NetworkUuid=? AND p.type='VirtualRouter'", (l3_uuid,))
    services = {r[0] for r in rows}
    if "SNAT" in services:
        return
    for service, name in (("Eip", "eip"), ("PortForwarding", "port forwarding")):
        if service not in services:
            continue
        if action == "attach":
            raise OperationError(f"failed tot attach virtual router network services to l3Network[uuid:{l3_uuid}]. "
                                 f"When {name} is selected, snat must be selected too")
        raise OperationError(f"cannot detach the SNAT service of the VirtualRouter provider from l3Network"
                             f"[uuid:{l3_uuid}]: its {service} service needs SNAT; detach {service} too")


check_services_changed(_snat_with_eip_pf)
