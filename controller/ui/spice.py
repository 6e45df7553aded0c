"""A ``.vv`` file for remote-viewer (virt-viewer) to open a SPICE VM's console.

``GET /ui/vms/{uuid}/console.vv`` follows the same rules as the VNC console page (:mod:`controller.ui.console`):
only a signed-in session (the UI middleware), and the VM and its console address are read through the API
dispatcher under that session (``QueryVmInstance`` then ``GetVmConsoleAddress``: the VM must exist for that
session and be Running). The file carries the console password, so it is an attachment that is never cached,
and asks remote-viewer to delete it once read.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from controller.ui.views import nav
from controller.ui.web import api, page, render

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _value(v: Any) -> str:
    """One line of a .vv value: control characters (newlines would start new keys) removed."""
    return _CONTROL.sub("", str(v))


def vv_file(*, host: str, port: int, password: str | None, title: str) -> str:
    lines = ["[virt-viewer]", "type=spice", f"host={_value(host)}", f"port={int(port)}"]
    if password:
        lines.append(f"password={_value(password)}")
    lines += [f"title={_value(title)}", "delete-this-file=1", ""]
    return "\n".join(lines)


async def vv_download(request: web.Request) -> web.Response:
    p = page(request)
    vm_uuid = request.match_info["uuid"]
    q = await api(request, "QueryVmInstance", {"conditions": [{"name": "uuid", "op": "=", "value": vm_uuid}],
                                               "limit": 1, "fields": ["uuid", "name"]})
    vms = q.reply.get("inventories", []) if q.ok else []
    if not vms:
        return render(request, "error.html", {**nav(), "title": p._("Not found"), "message": p._(
            "%(what)s %(key)s does not exist (any more).", what=p._("VM instances"), key=vm_uuid)}, status=404)
    out = await api(request, "GetVmConsoleAddress", {"uuid": vm_uuid})
    if not out.ok:
        err = out.error(p) or {}
        return render(request, "error.html", {**nav(), "title": p._("Console"), "message": " ".join(
            str(x) for x in (err.get("code"), err.get("summary"), err.get("details")) if x)}, status=out.status)
    protocol = str(out.reply.get("protocol", ""))
    if protocol != "spice":
        return render(request, "error.html", {**nav(), "title": p._("Console"), "message": p._(
            "This VM's console uses %(protocol)s, not SPICE: open it in the browser instead.",
            protocol=protocol.upper())}, status=409)
    name = str(vms[0].get("name") or vm_uuid)
    body = vv_file(host=str(out.reply["hostIp"]), port=int(out.reply["port"]), password=out.reply.get("password"),
                   title=name)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or vm_uuid
    resp = web.Response(text=body, content_type="application/x-virt-viewer")
    resp.headers["Content-Disposition"] = f'attachment; filename="{safe}.vv"'
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp
