"""The security-group pages beyond the generic ones: the create form, and the member / candidate NICs the
detail page lists (members through QueryVmNicInSecurityGroup, candidates through
GetCandidateVmNicForSecurityGroup)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.ui.views import DETAIL_SECTIONS, nav
from controller.ui.web import Outcome, api, page, render


async def nics(request: web.Request, sg_uuid: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    m = await api(request, "QueryVmNicInSecurityGroup",
                  {"conditions": [{"name": "securityGroupUuid", "op": "=", "value": sg_uuid}], "limit": 500})
    c = await api(request, "GetCandidateVmNicForSecurityGroup", {"securityGroupUuid": sg_uuid})
    return (list(m.reply.get("inventories", [])) if m.ok else [],
            list(c.reply.get("inventories", [])) if c.ok else [])


async def sg_new_get(request: web.Request) -> web.Response:
    return render(request, "sg_new.html", {**nav(), "form": {}, "call": None, "errors": [],
                                            "call_error": None})


async def sg_new_post(request: web.Request) -> web.Response:
    p = page(request)
    form = await request.post()
    name = str(form.get("name", "")).strip()
    errors: list[str] = []
    call: Outcome | None = None
    if not name:
        errors.append(p._("Name: enter a name."))
    else:
        body: dict[str, Any] = {"name": name}
        description = str(form.get("description", "")).strip()
        if description:
            body["description"] = description
        call = await api(request, "CreateSecurityGroup", body)
    status = 400 if errors else (200 if call is None or call.ok else call.status)
    return render(request, "sg_new.html", {**nav(), "form": form, "call": call, "errors": errors,
                                            "call_error": call.error(p) if call is not None else None},
                  status=status)


async def _sections(request: web.Request, inv: dict[str, Any]) -> dict[str, Any]:
    members, candidates = await nics(request, inv["uuid"])
    return {"members": members, "candidates": candidates}


DETAIL_SECTIONS["security-groups"] = _sections
