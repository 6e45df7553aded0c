"""Extra sections of a VM's detail page: the boot order (``GetVmBootOrder``/``SetVmBootOrder``) and the
snapshots of the VM's volumes (``QueryVolume``/``QueryVolumeSnapshot``; taking, reverting and deleting go to the
volume and snapshot actions of :mod:`controller.ui.resources`, with their confirmation), all through the API
dispatcher under the user's session."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.ui.views import DETAIL_SECTIONS, nav
from controller.ui.web import api, page, render

#: the boot orders offered (form value → the API's ``bootOrder`` list)
BOOT_ORDERS: dict[str, list[str]] = {
    "HardDisk": ["HardDisk"],
    "HardDisk,CdRom": ["HardDisk", "CdRom"],
    "CdRom,HardDisk": ["CdRom", "HardDisk"],
    "CdRom": ["CdRom"],
}


async def vm_sections(request: web.Request, inv: dict[str, Any]) -> dict[str, Any]:
    out = await api(request, "GetVmBootOrder", {"uuid": inv["uuid"]})
    order = ",".join(out.reply.get("order") or []) if out.ok else ""
    vq = await api(request, "QueryVolume", {"conditions": [{"name": "vmInstanceUuid", "op": "=", "value": inv["uuid"]}],
                                            "limit": 100, "sortBy": "deviceId"})
    volumes = list(vq.reply.get("inventories", [])) if vq.ok else []
    snapshots: list[dict[str, Any]] = []
    if volumes:
        sq = await api(request, "QueryVolumeSnapshot", {
            "conditions": [{"name": "volumeUuid", "op": "in", "value": [v["uuid"] for v in volumes]}],
            "limit": 500, "sortBy": "createDate", "sortDirection": "desc"})
        snapshots = list(sq.reply.get("inventories", [])) if sq.ok else []
    names = {v["uuid"]: v.get("name") or v["uuid"] for v in volumes}
    return {"boot_order": order, "boot_orders": list(BOOT_ORDERS), "volumes": volumes, "snapshots": snapshots,
            "volume_names": names}


async def boot_order_post(request: web.Request) -> web.Response:
    p = page(request)
    vm_uuid = request.match_info["uuid"]
    form = await request.post()
    value = str(form.get("order", ""))
    if value not in BOOT_ORDERS:
        return render(request, "error.html", {**nav(), "title": p._("Boot order"), "message": p._(
            "Boot order: %(v)s is not one of %(allowed)s.", v=value, allowed=", ".join(BOOT_ORDERS))}, status=400)
    out = await api(request, "SetVmBootOrder", {"uuid": vm_uuid, "bootOrder": BOOT_ORDERS[value]})
    if not out.ok:
        err = out.error(p) or {}
        return render(request, "error.html", {**nav(), "title": p._("Boot order"), "message": " ".join(
            str(x) for x in (err.get("code"), err.get("summary"), err.get("details")) if x)}, status=out.status)
    raise web.HTTPSeeOther(f"/ui/r/vms/{vm_uuid}")


async def _sections(request: web.Request, inv: dict[str, Any]) -> dict[str, Any]:
    return {"vm": await vm_sections(request, inv)}


DETAIL_SECTIONS["vms"] = _sections
