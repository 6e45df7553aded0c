"""The choices of the console's ``pick:NAME`` inputs (:mod:`controller.ui.resources`): each picker asks the API,
under the signed-in user's session, which resources this one may take (the candidates the API itself offers
where it has such a call: GetVmMigrationCandidateHosts, GetEipAttachableVmNics, GetPortForwardingAttachableVmNics),
and returns ``(value, label)`` pairs. A call the API refuses gives no choices (the form says so)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from controller.ui.web import api

Choice = tuple[str, str]
Picker = Callable[[web.Request, dict[str, Any]], Awaitable[list[Choice]]]
LIMIT = 500


async def _invs(request: web.Request, name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    out = await api(request, name, body)
    return list(out.reply.get("inventories", [])) if out.ok else []


def _query(name: str, *conds: tuple[str, str, Any]) -> dict[str, Any]:
    return {"conditions": [{"name": n, "op": op, "value": v} for n, op, v in conds], "limit": LIMIT,
            "sortBy": "name" if name != "QueryVmNic" else "createDate"}


def _named(invs: list[dict[str, Any]]) -> list[Choice]:
    return [(i["uuid"], f"{i.get('name') or i['uuid']} ({i['uuid'][:8]})") for i in invs]


async def _nic_choices(request: web.Request, nics: list[dict[str, Any]]) -> list[Choice]:
    """A NIC shows as ``<VM name> · <IP> (<L3 name>)``."""
    vm_uuids = sorted({n["vmInstanceUuid"] for n in nics})
    l3_uuids = sorted({n["l3NetworkUuid"] for n in nics})
    vms = {v["uuid"]: v.get("name") or v["uuid"] for v in await _invs(
        request, "QueryVmInstance", _query("QueryVmInstance", ("uuid", "in", vm_uuids)))} if vm_uuids else {}
    l3s = {n["uuid"]: n.get("name") or n["uuid"] for n in await _invs(
        request, "QueryL3Network", _query("QueryL3Network", ("uuid", "in", l3_uuids)))} if l3_uuids else {}
    return [(n["uuid"], f"{vms.get(n['vmInstanceUuid'], n['vmInstanceUuid'])} · {n.get('ip') or '-'} "
                        f"({l3s.get(n['l3NetworkUuid'], n['l3NetworkUuid'])})") for n in nics]


async def zones(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return _named(await _invs(request, "QueryZone", _query("QueryZone")))


async def l3_networks(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return _named(await _invs(request, "QueryL3Network", _query("QueryL3Network")))


async def images(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return _named(await _invs(request, "QueryImage", _query("QueryImage", ("status", "=", "Ready"))))


async def _clusters(request: web.Request, inv: dict[str, Any], attached: bool) -> list[Choice]:
    ids = list(inv.get("attachedClusterUuids") or [])
    if attached:
        return _named(await _invs(request, "QueryCluster", _query("QueryCluster", ("uuid", "in", ids)))) \
            if ids else []
    conds = [("zoneUuid", "=", inv.get("zoneUuid"))]
    if ids:
        conds.append(("uuid", "not in", ids))
    return _named(await _invs(request, "QueryCluster", _query("QueryCluster", *conds)))


async def ps_attachable_clusters(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return await _clusters(request, inv, False)


async def ps_attached_clusters(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return await _clusters(request, inv, True)


async def migration_hosts(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    hosts = await _invs(request, "GetVmMigrationCandidateHosts", {"vmInstanceUuid": inv["uuid"]})
    return [(h["uuid"], f"{h.get('name') or h['uuid']} · {h.get('managementIp', '')}") for h in hosts]


async def _vr_l3s(request: web.Request, needed: set[str]) -> list[str]:
    """The L3 networks that take every service in ``needed`` from the VirtualRouter provider."""
    vr = {p["uuid"] for p in await _invs(request, "QueryNetworkServiceProvider", _query(
        "QueryNetworkServiceProvider", ("type", "=", "VirtualRouter")))}
    return [n["uuid"] for n in await _invs(request, "QueryL3Network", _query("QueryL3Network"))
            if needed <= {s["networkServiceType"] for s in n.get("networkServices") or []
                          if s.get("networkServiceProviderUuid") in vr}]


async def _vm_nics(request: web.Request, needed: set[str]) -> list[Choice]:
    """NICs of Running or Stopped user VMs on L3s with the ``needed`` VirtualRouter services (the API checks the
    VIP's own rules when one is chosen: the form cannot know the VIP before it is sent)."""
    l3s = await _vr_l3s(request, needed)
    vms = await _invs(request, "QueryVmInstance", {**_query("QueryVmInstance", ("type", "=", "UserVm"),
                                                            ("state", "in", ["Running", "Stopped"])),
                                                   "fields": ["uuid"]})
    if not vms or not l3s:
        return []
    nics = await _invs(request, "QueryVmNic", _query("QueryVmNic", ("vmInstanceUuid", "in", [v["uuid"] for v in vms]),
                                                     ("l3NetworkUuid", "in", l3s)))
    return await _nic_choices(request, nics)


async def eip_create_nics(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return await _vm_nics(request, {"Eip"})


async def pf_create_nics(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return await _vm_nics(request, {"PortForwarding", "SNAT"})


async def eip_nics(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return await _nic_choices(request, await _invs(request, "GetEipAttachableVmNics", {"eipUuid": inv["uuid"]}))


async def pf_nics(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    return await _nic_choices(request, await _invs(request, "GetPortForwardingAttachableVmNics",
                                                   {"ruleUuid": inv["uuid"]}))


def _vip_label(v: dict[str, Any]) -> Choice:
    return v["uuid"], f"{v.get('name') or v['uuid']} · {v.get('ip', '')}"


async def free_vips(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    """VIPs serving nothing yet (a VIP serves one service: an EIP takes it whole)."""
    vips = await _invs(request, "QueryVip", _query("QueryVip", ("state", "=", "Enabled")))
    return [_vip_label(v) for v in vips if not v.get("useFor")]


async def pf_vips(request: web.Request, inv: dict[str, Any]) -> list[Choice]:
    """VIPs free or already serving port forwarding (more rules may share one)."""
    vips = await _invs(request, "QueryVip", _query("QueryVip", ("state", "=", "Enabled")))
    return [_vip_label(v) for v in vips if v.get("useFor") in (None, "", "PortForwarding")]


PICKERS: dict[str, Picker] = {
    "zones": zones, "l3-networks": l3_networks, "images": images,
    "ps-attachable-clusters": ps_attachable_clusters, "ps-attached-clusters": ps_attached_clusters,
    "migration-hosts": migration_hosts, "eip-create-nics": eip_create_nics, "pf-create-nics": pf_create_nics,
    "eip-nics": eip_nics, "pf-nics": pf_nics,
    "free-vips": free_vips, "pf-vips": pf_vips,
}


async def choices_for(request: web.Request, inputs: tuple[tuple[str, str, str], ...],
                      inv: dict[str, Any]) -> dict[str, list[Choice]]:
    """The choices of every ``pick:`` input of one form, by field name."""
    out: dict[str, list[Choice]] = {}
    for name, _label, kind in inputs:
        if kind.startswith("pick:"):
            out[name] = await PICKERS[kind[5:]](request, inv)
    return out
