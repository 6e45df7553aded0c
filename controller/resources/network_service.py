"""Network service providers and the network-service APIs (reference §3.1).

* At every start the three 1.0 providers exist exactly once (``Flat``, ``VirtualRouter``,
  ``SecurityGroup``, unique by type) with their service types; the hook is idempotent.
* Every new L2 is referenced by the providers that support its type (:func:`reference_providers`).
* ``AttachNetworkServiceProviderToL2Network`` is idempotent: attaching an attached provider succeeds and
  answers the provider inventory (so the seed's upgrade step 5 works although new L2s are
  auto-referenced). Detaching a provider that is not attached is 400; detaching one whose services are
  used by an L3 network of that L2 is 409 (detach the services first).
* ``AttachNetworkServiceToL3Network`` / ``DetachNetworkServiceFromL3Network`` take ``networkServices``,
  a JSON object providerUuid → list of service types, checked with 1.0's rules and texts before anything
  is written; the whole map is applied in one transaction or not at all. Detaching a service that is not
  attached is 400 SYS.1007 naming provider, type and L3 (1.0 only logged it) and changes nothing.
* After a change of an L3's services, the listeners registered with :func:`listen_services_changed` run
  (:func:`on_services_changed`), e.g. the flat provider allocating the L3's DHCP server IP.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.core import Controller, on_start
from controller.db.database import Tx
from controller.errors import InvalidArgument, NotFound, OperationError
from controller.resources.checks import require
from controller.util import new_uuid, now_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProviderDef:
    type: str
    name: str
    description: str
    services: tuple[str, ...]
    l2_types: tuple[str, ...]


PROVIDERS: tuple[ProviderDef, ...] = (
    ProviderDef("Flat", "Flat Network Service Provider", "Flat Network Service Provider", ("DHCP", "Userdata"),
                ("L2NoVlanNetwork", "L2VlanNetwork")),
    ProviderDef("VirtualRouter", "VirtualRouter", "VirtualRouter",
                ("DHCP", "DNS", "SNAT", "PortForwarding", "Eip", "LoadBalancer"),
                ("L2NoVlanNetwork", "L2VlanNetwork")),
    ProviderDef("SecurityGroup", "SecurityGroup", "SecurityGroup", ("SecurityGroup",),
                ("L2NoVlanNetwork", "L2VlanNetwork")),
)

ServicesListener = Callable[[ApiContext, str], Awaitable[None]]
_LISTENERS: list[ServicesListener] = []
#: fn(tx, l3NetworkUuid, action) with action "attach" or "detach": checks the L3's services as the change
#: leaves them (inside its transaction; raising refuses the change and rolls it back)
ServicesCheck = Callable[[Tx, str, str], Awaitable[None]]
_CHECKS: list[ServicesCheck] = []


def check_services_changed(fn: ServicesCheck) -> None:
    """Let ``fn`` refuse an attach/detach of services by the services it leaves on the L3 (a provider's rule)."""
    _CHECKS.append(fn)


def listen_services_changed(fn: ServicesListener) -> None:
    """Call ``fn(ctx, l3NetworkUuid)`` after network services were attached to or detached from an L3."""
    _LISTENERS.append(fn)


async def on_services_changed(ctx: ApiContext, l3_uuid: str) -> None:
    """Run every listener for ``l3_uuid`` after the change is committed. A failing listener is logged and
    does not undo the change nor stop the other listeners (each listener owns its retries)."""
    for fn in list(_LISTENERS):
        try:
            await fn(ctx, l3_uuid)
        except Exception:
            log.exception("network-service listener %s failed for L3 network %s", fn, l3_uuid)


@on_start(30, "network-service-providers")
async def _bootstrap(core: Controller) -> None:
    """Create the providers missing from the database and add their service types (idempotent)."""
    now = now_iso()
    async with core.db.write() as tx:
        for p in PROVIDERS:
            await tx.execute("INSERT INTO NetworkServiceProvider (uuid, name, description, type, createDate, "
                             "lastOpDate) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(type) DO NOTHING",
                             (new_uuid(), p.name, p.description, p.type, now, now))
            row = await tx.fetchone("SELECT uuid FROM NetworkServiceProvider WHERE type=?", (p.type,))
            assert row is not None
            await tx.executemany("INSERT OR IGNORE INTO NetworkServiceType (networkServiceProviderUuid, type) "
                                 "VALUES (?, ?)", [(row["uuid"], s) for s in p.services])


async def reference_providers(tx: Tx, l2_uuid: str, l2_type: str) -> None:
    """Reference ``l2_uuid`` by every provider that supports ``l2_type`` (inside the creating ``tx``)."""
    types = [p.type for p in PROVIDERS if l2_type in p.l2_types]
    marks = ", ".join("?" for _ in types)
    await tx.execute("INSERT OR IGNORE INTO NetworkServiceProviderL2NetworkRef (networkServiceProviderUuid, "
                     f"l2NetworkUuid) SELECT uuid, ? FROM NetworkServiceProvider WHERE type IN ({marks})",
                     (l2_uuid, *types))


class ProviderL2Msg(ApiMessage):
    networkServiceProviderUuid: Uuid
    l2NetworkUuid: Uuid


class NetworkServicesMsg(ApiMessage):
    l3NetworkUuid: Uuid
    networkServices: dict[str, list[str]]


class GetNetworkServiceTypesMsg(ApiMessage):
    pass


@api("AttachNetworkServiceProviderToL2Network", ProviderL2Msg, queue=lambda m: m.l2NetworkUuid)
async def attach_provider_to_l2(ctx: ApiContext, msg: ProviderL2Msg) -> dict[str, Any]:
    """Let a provider serve the L3 networks of an L2; attaching an attached provider succeeds."""
    async with ctx.db.write() as tx:
        provider = await require(tx, "NetworkServiceProvider", msg.networkServiceProviderUuid,
                                 "networkServiceProviderUuid")
        l2 = await require(tx, "L2Network", msg.l2NetworkUuid, "l2NetworkUuid")
        pdef = next((p for p in PROVIDERS if p.type == provider["type"]), None)
        if pdef is not None and l2["type"] not in pdef.l2_types:
            raise InvalidArgument(f"network service provider[uuid:{provider['uuid']}, type:{provider['type']}] "
                                  f"does not support L2 network type[{l2['type']}]")
        await tx.execute("INSERT OR IGNORE INTO NetworkServiceProviderL2NetworkRef (networkServiceProviderUuid, "
                         "l2NetworkUuid) VALUES (?, ?)", (provider["uuid"], l2["uuid"]))
    return {"inventory": await ctx.inventory("NetworkServiceProvider", msg.networkServiceProviderUuid)}


@api("DetachNetworkServiceProviderFromL2Network", ProviderL2Msg, queue=lambda m: m.l2NetworkUuid)
async def detach_provider_from_l2(ctx: ApiContext, msg: ProviderL2Msg) -> dict[str, Any]:
    """Stop a provider from serving an L2; refused while an L3 of that L2 uses its services."""
    p, l2 = msg.networkServiceProviderUuid, msg.l2NetworkUuid
    async with ctx.db.write() as tx:
        await require(tx, "NetworkServiceProvider", p, "networkServiceProviderUuid")
        await require(tx, "L2Network", l2, "l2NetworkUuid")
        used = await tx.fetchone(
            "SELECT r.l3NetworkUuid, r.networkServiceType FROM NetworkServiceL3NetworkRef r JOIN L3Network l "
            "ON l.uuid=r.l3NetworkUuid WHERE l.l2NetworkUuid=? AND r.networkServiceProviderUuid=?", (l2, p))
        if used is not None:
            raise OperationError(f"network service provider[uuid:{p}] provides service[{used[1]}] to L3 "
                                 f"network[uuid:{used[0]}] of L2 network[uuid:{l2}]; detach the service from "
                                 "the L3 network first")
        cur = await tx.execute("DELETE FROM NetworkServiceProviderL2NetworkRef WHERE networkServiceProviderUuid=? "
                               "AND l2NetworkUuid=?", (p, l2))
        if cur.rowcount == 0:
            raise InvalidArgument(f"network service provider[uuid:{p}] is not attached to L2 network[uuid:{l2}]")
    return {"inventory": await ctx.inventory("NetworkServiceProvider", p)}


async def _check_map(tx: Tx, services: dict[str, list[str]]) -> list[tuple[str, str]]:
    """1.0's checks of a ``networkServices`` map; returns its (providerUuid, type) pairs."""
    if not services:
        raise InvalidArgument("networkServices cannot be empty")
    pairs: list[tuple[str, str]] = []
    for puuid, types in services.items():
        if not types:
            raise InvalidArgument(f"network service for provider[uuid:{puuid}] must be specified")
        offered = {r[0] for r in await tx.fetchall(
            "SELECT type FROM NetworkServiceType WHERE networkServiceProviderUuid=?", (puuid,))}
        if not offered:
            raise NotFound(f"invalid field[networkServices]: cannot find network service provider[uuid:{puuid}] "
                           "or it provides no services")
        missing = [t for t in types if t not in offered]
        if missing:
            raise InvalidArgument(f"network service provider[uuid:{puuid}] doesn't provide services{missing}; "
                                  f"it provides {sorted(offered)}")
        pairs += [(puuid, t) for t in types]
    seen: set[str] = set()
    for _, t in pairs:
        if t in seen:
            raise InvalidArgument(f"invalid field[networkServices]: network service[{t}] is given more than once")
        seen.add(t)
    return pairs


@api("AttachNetworkServiceToL3Network", NetworkServicesMsg, queue=lambda m: m.l3NetworkUuid)
async def attach_services_to_l3(ctx: ApiContext, msg: NetworkServicesMsg) -> dict[str, Any]:
    """Give an L3 network services of one or more providers (one provider per service type)."""
    async with ctx.db.write() as tx:
        await require(tx, "L3Network", msg.l3NetworkUuid, "l3NetworkUuid")
        pairs = await _check_map(tx, msg.networkServices)
        existing = {r[0] for r in await tx.fetchall(
            "SELECT networkServiceType FROM NetworkServiceL3NetworkRef WHERE l3NetworkUuid=?", (msg.l3NetworkUuid,))}
        for _, t in pairs:
            if t in existing:
                raise OperationError(f"there has been a network service[{t}] attached to L3 "
                                     f"network[uuid:{msg.l3NetworkUuid}]")
        await tx.executemany("INSERT INTO NetworkServiceL3NetworkRef (l3NetworkUuid, networkServiceProviderUuid, "
                             "networkServiceType) VALUES (?, ?, ?)", [(msg.l3NetworkUuid, p, t) for p, t in pairs])
        for check in _CHECKS:
            await check(tx, msg.l3NetworkUuid, "attach")
    await on_services_changed(ctx, msg.l3NetworkUuid)
    return {"inventory": await ctx.inventory("L3Network", msg.l3NetworkUuid)}


@api("DetachNetworkServiceFromL3Network", NetworkServicesMsg, queue=lambda m: m.l3NetworkUuid)
async def detach_services_from_l3(ctx: ApiContext, msg: NetworkServicesMsg) -> dict[str, Any]:
    """Remove services from an L3 network; every named service must be attached, else nothing changes."""
    async with ctx.db.write() as tx:
        await require(tx, "L3Network", msg.l3NetworkUuid, "l3NetworkUuid")
        pairs = await _check_map(tx, msg.networkServices)
        for p, t in pairs:
            if await tx.fetchone("SELECT 1 FROM NetworkServiceL3NetworkRef WHERE l3NetworkUuid=? AND "
                                 "networkServiceProviderUuid=? AND networkServiceType=?",
                                 (msg.l3NetworkUuid, p, t)) is None:
                raise InvalidArgument(f"network service[{t}] of provider[uuid:{p}] is not attached to L3 "
                                      f"network[uuid:{msg.l3NetworkUuid}]")
        await tx.executemany("DELETE FROM NetworkServiceL3NetworkRef WHERE l3NetworkUuid=? AND "
                             "networkServiceProviderUuid=? AND networkServiceType=?",
                             [(msg.l3NetworkUuid, p, t) for p, t in pairs])
        for check in _CHECKS:
            await check(tx, msg.l3NetworkUuid, "detach")
    await on_services_changed(ctx, msg.l3NetworkUuid)
    return {"inventory": await ctx.inventory("L3Network", msg.l3NetworkUuid)}


@api("GetNetworkServiceTypes", GetNetworkServiceTypesMsg)
async def get_network_service_types(ctx: ApiContext, msg: GetNetworkServiceTypesMsg) -> dict[str, Any]:
    """The service types each provider type offers: ``{"types": {providerType: [serviceType, ...]}}``."""
    rows = await ctx.db.fetchall("SELECT p.type, t.type FROM NetworkServiceProvider p JOIN NetworkServiceType t "
                                 "ON t.networkServiceProviderUuid=p.uuid ORDER BY p.type, t.type")
    types: dict[str, list[str]] = {}
    for r in rows:
        types.setdefault(r[0], []).append(r[1])
    return {"types": types}
