"""One virtual router VM per guest L3, created on demand (reference virtual-router.md §1.2, §6).

* Lookup: the ApplianceVm row whose ``guestL3NetworkUuid`` is the L3 (a unique index: one router per L3; the
  creation runs in the L3's work queue ``vr-l3-<l3>``, so concurrent VM starts create it once). A router that
  is Running and Connected is re-pushed; one in any other state is destroyed and re-created (it is stateless)
  instead of failing the user's VM start (1.0 failed with SYS.1006 "We don't have HA feature now").
* Creation: the offering for the L3 (``guestL3Network::`` tag, else the zone default; VR.1002); with SNAT the
  offering needs a public network other than the guest L3 (VR.1001). NICs in device order: management
  (metaData 2, or 3 when public == management), public (1; the default route), guest (4; with SNAT it takes the
  gateway of the L3's first IP range, not an address of the pool); each address is ARP-probed on its L2
  first (:mod:`.addrcheck`: one in use is skipped, a gateway in use refused). Name ``virtualRouter.l3.<l3>``, type
  ApplianceVm, cpu/memory/image from the offering; started through compute's ordinary start with the router's
  control channel; then its agent is initialised over the channel (a fresh 48-hex-digit bearer token per
  router, stored only sealed in ApplianceVm.agentToken, see controller/sealed.py) and the whole desired state
  is pushed. Any failure destroys
  the half-made router (domain, volume, rows, IPs).
* State pushes carry a generation number (ApplianceVm.generation); the router reports the one it runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from controller import sealed
from controller.api.context import ApiContext
from controller.compute.vmcreate import CreateVmInstanceMsg, insert_vm, remove_vm, rollback_on_host
from controller.compute.vmstart import start_on_host
from controller.core import Controller
from controller.errors import ApiError, OperationError
from controller.identity import ADMIN_UUID
from controller.resources import ipam
from controller.util import new_uuid, now_iso
from controller.vrouter_provider.addrcheck import check_addresses
from controller.vrouter_provider.offering import offering_for
from kvmagent.contract.vrouter import VRouterCallCmd
from vrouter.contract import code_digest, code_files, package_dir

log = logging.getLogger(__name__)

PUBLIC, MANAGEMENT, GUEST = 1, 2, 4
#: QEMU start -> agent answering; generous: TCG guests on a loaded 2-core machine (bench: 7-11 s idle)
AGENT_READY_TIMEOUT = 240.0
PUSH_TIMEOUT = 60.0
#: more of the router's state (e.g. portforward.pf_state): ``await part(db, vr, guestNic, nicsByL3, state)``
#: adds its keys to ``state``
STATE_PARTS: list[Callable[[Any, dict[str, Any], dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]],
                           Awaitable[None]]] = []
#: a pushed agent code: the agent exits, busybox init starts it again (Python from source under TCG)
AGENT_RESTART_TIMEOUT = 120.0
#: user VMs in these states get their DHCP entry on the router (a migrating or unknown VM keeps its lease)
_SERVED_STATES = "('Starting', 'Running', 'Rebooting', 'Migrating', 'Unknown')"


async def vr_services(db: Any, l3_uuid: str) -> set[str]:
    rows = await db.fetchall(
        "SELECT r.networkServiceType FROM NetworkServiceL3NetworkRef r JOIN NetworkServiceProvider p "
        "ON p.uuid = r.networkServiceProviderUuid WHERE r.l3NetworkUuid=? AND p.type='VirtualRouter'", (l3_uuid,))
    return {r[0] for r in rows}


async def router_of(db: Any, l3_uuid: str) -> dict[str, Any] | None:
    row = await db.fetchone("SELECT v.*, a.agentToken, a.generation, a.status, a.managementNetworkUuid, "
                            "a.publicNetworkUuid, a.defaultRouteL3NetworkUuid, a.guestL3NetworkUuid FROM ApplianceVm a "
                            "JOIN VmInstance v ON v.uuid = a.uuid WHERE a.guestL3NetworkUuid=?", (l3_uuid,))
    return dict(row) if row else None


async def ensure_router(core: Controller, l3_uuid: str) -> dict[str, Any]:
    """The guest L3's router, Running, Connected and configured (created or re-created if needed)."""
    return await core.queues.run(f"vr-l3-{l3_uuid}", lambda: _ensure(core, l3_uuid))


async def _ensure(core: Controller, l3_uuid: str) -> dict[str, Any]:
    vr = await router_of(core.db, l3_uuid)
    if vr is not None and vr["state"] == "Running":
        try:
            await push_state(core, vr)
            return vr
        except ApiError as e:
            log.warning("router %s of l3 %s does not answer (%s): re-creating it", vr["uuid"], l3_uuid, e.details)
    if vr is not None:
        log.info("router %s of l3 %s is %s: re-creating it (routers are stateless)", vr["uuid"], l3_uuid,
                 vr["state"])
        await destroy_router(core, vr)
    return await create_router(core, l3_uuid)


async def destroy_router(core: Controller, vr: dict[str, Any]) -> None:
    """Direct deletion (1.0: appliance VMs are never kept Destroyed): domain and volume on the host, rows, IPs."""
    ctx = ApiContext(core=core, api="DestroyVirtualRouter")
    target = vr.get("hostUuid") or vr.get("lastHostUuid")   # a stopped router's disk stays on its last host
    if target:
        host = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (target,))
        if host is not None and host["status"] == "Connected" and not await rollback_on_host(ctx, dict(host), vr):
            raise OperationError(f"cannot destroy virtual router[uuid:{vr['uuid']}] on host[uuid:{host['uuid']}]: "
                                 "the host agent did not confirm")
    await remove_vm(ctx, vr["uuid"])


def _prefix(netmask: str) -> int:
    return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen


async def create_router(core: Controller, l3_uuid: str) -> dict[str, Any]:
    """Create, start and configure the L3's router (the caller holds the L3's queue); rolled back on failure."""
    l3 = await core.db.fetchone("SELECT * FROM L3Network WHERE uuid=?", (l3_uuid,))
    if l3 is None:
        raise OperationError(f"L3 network[uuid:{l3_uuid}] no longer exists")
    services = await vr_services(core.db, l3_uuid)
    off = await offering_for(core.db, dict(l3))
    mgmt, public = off["managementNetworkUuid"], off["publicNetworkUuid"]
    if "SNAT" in services and public == l3_uuid:
        raise OperationError(f"virtual router offering[uuid:{off['uuid']}] has the guest L3 network[uuid:{l3_uuid}] "
                             "as its public network; SNAT needs another public network (use a guestL3Network:: "
                             "tagged offering)", code="VR.1001")
    l3s = list(dict.fromkeys([mgmt, public, l3_uuid]))   # device order: management, public, guest
    gw_range = await core.db.fetchone("SELECT gateway, netmask FROM IpRange WHERE l3NetworkUuid=? ORDER BY createDate "
                                      "LIMIT 1", (l3_uuid,))
    if "SNAT" in services and gw_range is None:
        raise OperationError(f"L3 network[uuid:{l3_uuid}] has no IP range: its router has no gateway to own")
    image = await core.db.fetchone("SELECT * FROM Image WHERE uuid=?", (off["imageUuid"],))
    if image is None:
        raise OperationError(f"image[uuid:{off['imageUuid']}] of virtual router offering[uuid:{off['uuid']}] "
                             "no longer exists")
    ctx = ApiContext(core=core, api="CreateVirtualRouterVm")
    msg = CreateVmInstanceMsg(name=f"virtualRouter.l3.{l3_uuid}", instanceOfferingUuid=off["uuid"],
                              imageUuid=off["imageUuid"], l3NetworkUuids=l3s, type="ApplianceVm",
                              defaultL3NetworkUuid=public, zoneUuid=l3["zoneUuid"], resourceUuid=new_uuid())
    assert msg.resourceUuid is not None
    # the router VM's own work queue is held from its insertion on (as CreateVmInstance does): crash recovery and
    # the host ping's reconcile skip a VM whose queue is busy, so they never roll back a router being created
    return await core.queues.run(msg.resourceUuid, lambda: _create(core, ctx, msg, dict(off), dict(image), l3_uuid,
                                                                   services, gw_range, mgmt, public))


async def _create(core: Controller, ctx: ApiContext, msg: CreateVmInstanceMsg, off: dict[str, Any],
                  image: dict[str, Any], l3_uuid: str, services: set[str], gw_range: Any, mgmt: str,
                  public: str) -> dict[str, Any]:
    vm = await insert_vm(ctx, msg, off, image)
    try:
        token = secrets.token_hex(24)
        async with core.db.write() as tx:
            for nic in await tx.fetchall("SELECT * FROM VmNic WHERE vmInstanceUuid=?", (vm["uuid"],)):
                role = ((MANAGEMENT if nic["l3NetworkUuid"] == mgmt else 0) |
                        (PUBLIC if nic["l3NetworkUuid"] == public else 0) |
                        (GUEST if nic["l3NetworkUuid"] == l3_uuid else 0))
                values: dict[str, Any] = {"metaData": str(role), "lastOpDate": now_iso()}
                if nic["l3NetworkUuid"] == l3_uuid and "SNAT" in services and gw_range is not None:
                    if nic["usedIpUuid"]:   # the gateway is outside every range: not from the pool
                        await ipam.release(tx, nic["usedIpUuid"])
                    values.update(ip=gw_range["gateway"], usedIpUuid=None, gateway=gw_range["gateway"],
                                  netmask=gw_range["netmask"])
                await tx.update("VmNic", {"uuid": nic["uuid"]}, values)
            await tx.insert("ApplianceVm", {
                "uuid": vm["uuid"], "applianceVmType": "VirtualRouter", "managementNetworkUuid": mgmt,
                "defaultRouteL3NetworkUuid": public, "publicNetworkUuid": public, "guestL3NetworkUuid": l3_uuid,
                "status": "Connecting", "agentToken": sealed.seal(core, token), "generation": 0})
        host = dict(await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (vm["hostUuid"],)) or {})
        await check_addresses(core, host, vm["uuid"])
        await start_on_host(core, host, vm, ADMIN_UUID, new_create=True)
        async with core.db.write() as tx:
            await tx.execute("UPDATE VmInstance SET state='Running', lastOpDate=? WHERE uuid=?",
                             (now_iso(), vm["uuid"]))
        vr = await router_of(core.db, l3_uuid)
        assert vr is not None
        await connect_agent(core, vr, timeout=AGENT_READY_TIMEOUT)
        return vr
    except BaseException:
        log.exception("creating the router of l3 %s failed; removing it", l3_uuid)
        host_row = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (vm["hostUuid"],))
        if host_row is None or await rollback_on_host(ctx, dict(host_row), vm):
            await remove_vm(ctx, vm["uuid"])
        raise


def agent_code() -> tuple[dict[str, str], str]:
    """The router agent's code as this controller ships it (the ``vrouter`` package) and its digest."""
    global _AGENT_CODE
    if _AGENT_CODE is None:
        files = code_files(package_dir())
        _AGENT_CODE = (files, code_digest(files))
    return _AGENT_CODE


_AGENT_CODE: tuple[dict[str, str], str] | None = None


async def connect_agent(core: Controller, vr: dict[str, Any], *, timeout: float) -> None:
    """Init the router's agent over its channel (its token again: a rebooted router forgot it), push the
    controller's agent code if the router runs other code, then push the whole state (status Connected)."""
    token = sealed.unseal(core, vr["agentToken"]) or ""
    reply = await call_router(core, vr, "/init", {"uuid": vr["uuid"], "token": token}, timeout=timeout, wait=True)
    if reply.get("digest") != agent_code()[1]:
        reply = await upgrade_agent(core, vr, reply)
    async with core.db.write() as tx:
        await tx.update("ApplianceVm", {"uuid": vr["uuid"]}, {"agentVersion": reply.get("version")})
    await push_state(core, vr)


async def upgrade_agent(core: Controller, vr: dict[str, Any], ping: dict[str, Any]) -> dict[str, Any]:
    """Push the controller's agent code to a router whose agent runs other code (its ``digest`` differs), over
    the authenticated channel; the agent restarts with it (its identity and data plane are kept). Returns the
    restarted agent's ping. A router whose agent is too old to take code (no ``/upgrade``) keeps its code: the
    refusal is logged and its ping returned."""
    files, digest = agent_code()
    log.info("router %s runs agent %s (code %s); pushing the controller's code %s", vr["uuid"], ping.get("version"),
             str(ping.get("digest"))[:16], digest[:16])
    try:
        await call_router(core, vr, "/upgrade", {"files": files, "digest": digest}, timeout=PUSH_TIMEOUT)
    except OperationError as e:
        if "HTTP 404" not in e.details:
            raise
        log.warning("router %s: its agent cannot take new code (%s); re-create it from a newer image", vr["uuid"],
                    e.details)
        return ping
    deadline = time.monotonic() + AGENT_RESTART_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        await asyncio.sleep(2)
        try:
            now = await call_router(core, vr, "/ping", {}, timeout=10)
        except ApiError as e:
            last = e.details
            continue
        if now.get("digest") == digest:
            log.info("router %s restarted with agent %s", vr["uuid"], now.get("version"))
            return now
        last = f"it runs code {str(now.get('digest'))[:16]}"
    raise OperationError(f"virtual router[uuid:{vr['uuid']}] did not come back with the pushed agent code within "
                         f"{AGENT_RESTART_TIMEOUT:.0f} s ({last})", code="VR.1000")


async def call_router(core: Controller, vr: dict[str, Any], path: str, body: dict[str, Any], *, timeout: float,
                wait: bool = False) -> dict[str, Any]:
    host = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (vr["hostUuid"],))
    if host is None:
        raise OperationError(f"virtual router[uuid:{vr['uuid']}] has no host")
    reply = await core.services["agents"].call(dict(host), VRouterCallCmd(
        vmUuid=vr["uuid"], path=path, body=body, token=sealed.unseal(core, vr["agentToken"]) or "", timeout=timeout,
        waitReady=wait),
        timeout=timeout + 30)
    if reply.status != 200:
        raise OperationError(f"virtual router[uuid:{vr['uuid']}] refused {path}: HTTP {reply.status} "
                             f"{reply.body.get('error')}", code="VR.1000")
    return dict(reply.body)


async def desired_state(core: Controller, vr: dict[str, Any], generation: int) -> dict[str, Any]:
    """The router's whole configuration from the database (vrouter.render's input)."""
    db = core.db
    nics = [dict(r) for r in await db.fetchall("SELECT * FROM VmNic WHERE vmInstanceUuid=? ORDER BY deviceId",
                                               (vr["uuid"],))]
    by_l3 = {n["l3NetworkUuid"]: n for n in nics}
    guest_l3 = vr["guestL3NetworkUuid"]
    services = await vr_services(db, guest_l3)
    state: dict[str, Any] = {"generation": generation, "nics": [
        {"mac": n["mac"], "ip": n["ip"], "prefix": _prefix(n["netmask"]), "gateway": n["gateway"],
         "defaultRoute": n["l3NetworkUuid"] == vr["defaultRouteL3NetworkUuid"], "metaData": int(n["metaData"] or 0)}
        for n in nics]}
    guest, public = by_l3.get(guest_l3), by_l3.get(vr["publicNetworkUuid"])
    if guest is None:
        return state
    cidr = str(ipaddress.IPv4Network(f"{guest['ip']}/{guest['netmask']}", strict=False))
    if "SNAT" in services and public is not None and public is not guest:
        state["snat"] = [{"privateNicMac": guest["mac"], "publicNicMac": public["mac"], "publicIp": public["ip"],
                          "guestCidr": cidr}]
    rows = await db.fetchall(
        "SELECT v.ip AS vipIp, v.netmask AS vipNetmask, v.l3NetworkUuid AS vipL3, n.ip AS guestIp "
        "FROM Eip e JOIN Vip v ON v.uuid = e.vipUuid JOIN VmNic n ON n.uuid = e.vmNicUuid "
        "JOIN VmInstance vm ON vm.uuid = n.vmInstanceUuid WHERE n.l3NetworkUuid=? AND e.state='Enabled' "
        "AND v.state='Enabled' AND vm.state IN ('Starting', 'Running', 'Rebooting') ORDER BY v.ip", (guest_l3,))
    for r in rows:
        holder = by_l3.get(r["vipL3"])
        if holder is None:   # the router has no NIC on the VIP's L3 (another offering's public network)
            log.warning("router %s has no NIC on the L3 %s of vip %s: eip not applied", vr["uuid"], r["vipL3"],
                        r["vipIp"])
            continue
        state.setdefault("vips", []).append({"ip": r["vipIp"], "prefix": _prefix(r["vipNetmask"]),
                                             "nicMac": holder["mac"]})
        state.setdefault("eips", []).append({"vipIp": r["vipIp"], "guestIp": r["guestIp"],
                                             "publicNicMac": holder["mac"], "privateNicMac": guest["mac"]})
    for part in STATE_PARTS:
        await part(db, vr, guest, by_l3, state)
    if "DHCP" in services:
        dns = [r[0] for r in await db.fetchall("SELECT dns FROM L3NetworkDns WHERE l3NetworkUuid=? ORDER BY position",
                                               (guest_l3,))]
        rows = await db.fetchall(
            "SELECT n.mac, n.ip, n.netmask, n.gateway, v.name FROM VmNic n "
            "JOIN VmInstance v ON v.uuid = n.vmInstanceUuid "
            "WHERE n.l3NetworkUuid=? AND n.ip IS NOT NULL AND v.type='UserVm' AND v.state IN " + _SERVED_STATES +
            " ORDER BY n.mac", (guest_l3,))
        state["dhcp"] = [{"nicMac": guest["mac"], "mac": r["mac"], "ip": r["ip"], "prefix": _prefix(r["netmask"]),
                          "gateway": r["gateway"], "dns": [guest["ip"]] if "DNS" in services else dns}
                         for r in rows]
        if "DNS" in services:
            state["dns"] = {"nicMacs": [guest["mac"]], "upstreams": dns}
    return state


async def push_l3(core: Controller, l3_uuid: str) -> None:
    """Push the whole state to the L3's router if it runs (in the L3's queue: pushes do not overtake each other)."""
    async def run() -> None:
        vr = await router_of(core.db, l3_uuid)
        if vr is not None and vr["state"] == "Running":
            await push_state(core, vr)
    await core.queues.run(f"vr-l3-{l3_uuid}", run)


async def push_state(core: Controller, vr: dict[str, Any]) -> int:
    """Push the whole desired state with the next generation number; marks the router Connected."""
    async with core.db.write() as tx:
        await tx.execute("UPDATE ApplianceVm SET generation = generation + 1 WHERE uuid=?", (vr["uuid"],))
        row = await tx.fetchone("SELECT generation FROM ApplianceVm WHERE uuid=?", (vr["uuid"],))
    if row is None:
        raise OperationError(f"virtual router[uuid:{vr['uuid']}] no longer exists")
    gen = int(row[0])
    try:
        reply = await call_router(core, vr, "/apply", await desired_state(core, vr, gen), timeout=PUSH_TIMEOUT)
    except ApiError:
        async with core.db.write() as tx:
            await tx.execute("UPDATE ApplianceVm SET status='Disconnected' WHERE uuid=?", (vr["uuid"],))
        raise
    async with core.db.write() as tx:
        await tx.execute("UPDATE ApplianceVm SET status='Connected' WHERE uuid=?", (vr["uuid"],))
    return int(reply.get("generation", gen))
