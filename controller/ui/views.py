"""The console's pages: sign-in, dashboard, generic list/detail/action pages from
:data:`controller.ui.resources.RESOURCES`, the VM wizard and the jobs page."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from controller.api.http import CORE
from controller.ui import i18n, live
from controller.ui.pickers import choices_for
from controller.ui.resources import BY_SLUG, GROUPS, RESOURCES, Action, Col, Res
from controller.ui.web import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Outcome,
    api,
    new_login_csrf,
    page,
    render,
    safe_next,
    set_session_cookie,
)
from controller.util import new_uuid

PAGE_SIZES = (20, 50, 100)
PAGE_SIZE_COOKIE = "zs_page_size"
#: the chosen columns of a list, one cookie per resource: ``zs_cols_<slug>`` = field names joined by "."
COLS_COOKIE = "zs_cols_"


def nav() -> dict[str, Any]:
    return {"groups": [(g, [r for r in RESOURCES if r.group == g]) for g in GROUPS]}


# --- sign-in, sign-out, language -------------------------------------------------------------------------

async def login_get(request: web.Request) -> web.Response:
    token = new_login_csrf()
    resp = render(request, "login.html", {"login_csrf": token, "next": safe_next(request.query.get("next")),
                                          "account": ""})
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, path="/ui/login", httponly=True, samesite="Strict",
                    secure=request.secure)
    return resp


async def login_post(request: web.Request) -> web.Response:
    p = page(request)
    form = await request.post()
    sent, cookie = str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    nxt = safe_next(str(form.get("next", "")))
    account = str(form.get("account", ""))
    if not cookie or sent != cookie:
        token = new_login_csrf()
        resp = render(request, "login.html", {"login_csrf": token, "next": nxt, "account": account,
                                              "error": {"code": "", "summary": p._(
                                                  "The sign-in form expired; try again."), "details": ""}},
                      status=403)
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, path="/ui/login", httponly=True, samesite="Strict",
                        secure=request.secure)
        return resp
    out = await api(request, "LogInByAccount", {"accountName": account, "password": str(form.get("password", ""))})
    if not out.ok:
        resp = render(request, "login.html", {"login_csrf": cookie, "next": nxt, "account": account,
                                              "error": out.error(p)}, status=out.status)
        return resp
    resp = web.HTTPSeeOther(nxt)
    set_session_cookie(request, resp, out.reply["inventory"])
    resp.del_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    raise resp


async def logout(request: web.Request) -> web.Response:
    await api(request, "LogOut", {})
    resp = web.HTTPSeeOther("/ui/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


async def set_language(request: web.Request) -> web.Response:
    lang = request.query.get("to", "")
    if lang not in i18n.LANGUAGES:
        raise web.HTTPBadRequest(text=f"language {lang!r} is not one of {', '.join(i18n.LANGUAGES)}")
    resp = web.HTTPSeeOther(safe_next(request.query.get("next")))
    resp.set_cookie(i18n.COOKIE, lang, max_age=365 * 86400, path="/", samesite="Lax", secure=request.secure)
    raise resp


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


# --- dashboard -----------------------------------------------------------------------------------------

async def dashboard(request: web.Request) -> web.Response:
    db = request.app[CORE].db
    async with db.read() as conn:
        async def one(sql: str) -> tuple[int, int]:
            async with conn.execute(sql) as cur:
                row = await cur.fetchone()
            return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)

        async def groups(sql: str) -> list[tuple[str, int]]:
            async with conn.execute(sql) as cur:
                return [(str(r[0]), int(r[1])) for r in await cur.fetchall()]

        cpu = await one("SELECT SUM(totalCpuCapacity), SUM(availableCpuCapacity) FROM Host")
        mem = await one("SELECT SUM(totalMemoryCapacity), SUM(availableMemoryCapacity) FROM Host")
        ps = await one("SELECT SUM(totalCapacity), SUM(availableCapacity) FROM PrimaryStorage")
        bs = await one("SELECT SUM(totalCapacity), SUM(availableCapacity) FROM BackupStorage")
        ip_total = (await one("SELECT SUM(endInt - startInt + 1), 0 FROM IpRange"))[0]
        ip_used = (await one("SELECT COUNT(*), 0 FROM UsedIp"))[0]
        hosts = await groups("SELECT status, COUNT(*) FROM Host GROUP BY status ORDER BY status")
        vms = await groups("SELECT state, COUNT(*) FROM VmInstance WHERE type='UserVm' GROUP BY state "
                           "ORDER BY state")
        async with conn.execute("SELECT uuid, apiName, state, resourceUuid, createDate, finishedDate, result "
                                "FROM Job ORDER BY createDate DESC LIMIT 10") as cur:
            jobs = [_job(dict(r)) for r in await cur.fetchall()]
    capacity = [
        (i18n.N_("CPU"), "number", cpu[0], cpu[0] - cpu[1], "MHz"),
        (i18n.N_("Memory"), "size", mem[0], mem[0] - mem[1], ""),
        (i18n.N_("Primary storage"), "size", ps[0], ps[0] - ps[1], ""),
        (i18n.N_("Backup storage"), "size", bs[0], bs[0] - bs[1], ""),
        (i18n.N_("IP addresses"), "number", ip_total, ip_used, ""),
    ]
    return render(request, "dashboard.html", {**nav(), "capacity": capacity, "hosts": hosts, "vms": vms,
                                              "jobs": jobs})


def _job(row: dict[str, Any]) -> dict[str, Any]:
    result = json.loads(row.pop("result") or "null") or {}
    row["error"] = (result.get("error") or {}).get("details") if isinstance(result, dict) else None
    return row


async def jobs_panel(request: web.Request) -> web.Response:
    """The task panel's first content (the live stream updates it afterwards)."""
    async with request.app[CORE].db.read() as conn:
        async with conn.execute("SELECT uuid, apiName, state, resourceUuid, createDate, finishedDate, result "
                                "FROM Job ORDER BY createDate DESC LIMIT 8") as cur:
            jobs = [_job(dict(r)) for r in await cur.fetchall()]
    return render(request, "_panel.html", {"jobs": jobs})


async def jobs_page(request: web.Request) -> web.Response:
    async with request.app[CORE].db.read() as conn:
        async with conn.execute("SELECT uuid, apiName, state, resourceUuid, createDate, finishedDate, result "
                                "FROM Job ORDER BY createDate DESC LIMIT 100") as cur:
            jobs = [_job(dict(r)) for r in await cur.fetchall()]
    return render(request, "jobs.html", {**nav(), "jobs": jobs})


# --- generic lists and details ---------------------------------------------------------------------------

def _res(request: web.Request) -> Res:
    res = BY_SLUG.get(request.match_info["slug"])
    if res is None:
        raise web.HTTPNotFound(text="no such resource page")
    return res


def _int(value: str | None, default: int, lo: int, hi: int) -> int:
    try:
        n = int(value) if value is not None else default
    except ValueError:
        return default
    return max(lo, min(hi, n))


def list_body(res: Res, q: Any, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Query* body for the list's filters, sort and page, and the normalised filter values."""
    conds: list[dict[str, Any]] = []
    state = q.get("state", "")
    if res.state_field and state in res.states:
        conds.append({"name": res.state_field, "op": "=", "value": state})
    else:
        state = ""
    zone = q.get("zone", "")
    if res.zone_field and zone:
        conds.append({"name": res.zone_field, "op": "=", "value": zone})
    name = q.get("name", "").strip()
    if res.name_field and name:
        escaped = name.replace("%", "").replace("_", "")
        if escaped:
            conds.append({"name": res.name_field, "op": "like", "value": f"%{escaped}%"})
    tag = q.get("tag", "").strip()
    if res.taggable and tag:
        conds.append({"name": "__userTag__", "op": "=", "value": tag})
    stag = q.get("stag", "").strip()
    if res.taggable and stag:
        conds.append({"name": "__systemTag__", "op": "=", "value": stag})
    sortable = {c.field for c in res.columns if c.sortable} | {res.default_sort}
    sort = q.get("sort", "") if q.get("sort", "") in sortable else res.default_sort
    direction = q.get("dir", "desc" if sort == "createDate" else "asc")
    direction = direction if direction in ("asc", "desc") else "asc"
    pg = _int(q.get("page"), 1, 1, 1_000_000)
    body = {"conditions": conds, "start": (pg - 1) * size, "limit": size, "replyWithCount": True,
            "sortBy": sort, "sortDirection": direction}
    return body, {"state": state, "zone": zone, "name": name, "tag": tag, "stag": stag, "sort": sort,
                  "dir": direction, "page": pg, "size": size}


def chosen_columns(res: Res, query: Any, cookie: str | None) -> tuple[list[Col], bool]:
    """The columns to show: the chooser's ``cols`` (when its form ``colsform`` was sent), else the remembered
    cookie, else all. Unknown fields are ignored; the first column (the link to the detail page) always shows.
    Returns the columns and whether the choice came from the query (to remember it)."""
    if query.get("colsform"):
        wanted, from_query = set(query.getall("cols", [])), True
    elif cookie:
        wanted, from_query = set(cookie.split(".")), False
    else:
        return list(res.columns), False
    cols = [c for i, c in enumerate(res.columns) if i == 0 or c.field in wanted]
    return cols, from_query


async def list_page(request: web.Request) -> web.Response:
    res = _res(request)
    cols, remember = chosen_columns(res, request.query, request.cookies.get(COLS_COOKIE + res.slug))
    size = _int(request.query.get("size") or request.cookies.get(PAGE_SIZE_COOKIE), 20, 1, 100)
    if size not in PAGE_SIZES:
        size = 20
    body, f = list_body(res, request.query, size)
    out = await api(request, res.query, body)
    rows = out.reply.get("inventories", []) if out.ok else []
    total = int(out.reply.get("total", 0)) if out.ok else 0
    zones: list[dict[str, Any]] = []
    if res.zone_field:
        zo = await api(request, "QueryZone", {"conditions": [], "limit": 100, "fields": ["uuid", "name"]})
        zones = zo.reply.get("inventories", []) if zo.ok else []
    ctx = {**nav(), "res": res, "rows": rows, "total": total, "f": f, "zones": zones, "call": out,
           "error": out.error(page(request)), "pages": max(1, -(-total // size)), "sizes": PAGE_SIZES,
           "cols": cols, "shown": {c.field for c in cols}}
    template = "_table.html" if request.headers.get("HX-Request") and request.headers.get("HX-Target") == \
        "list" else "list.html"
    resp = render(request, template, ctx)
    if request.query.get("size"):
        resp.set_cookie(PAGE_SIZE_COOKIE, str(size), max_age=365 * 86400, path="/ui/", samesite="Strict")
    if remember:
        resp.set_cookie(COLS_COOKIE + res.slug, ".".join(c.field for c in cols), max_age=365 * 86400,
                        path="/ui/", samesite="Strict", httponly=True, secure=request.secure)
    return resp


async def _load(request: web.Request, res: Res, key: str) -> tuple[dict[str, Any] | None, Outcome]:
    out = await api(request, res.query, {"conditions": res.key_conditions(key), "limit": 1})
    invs = out.reply.get("inventories", []) if out.ok else []
    return (invs[0] if invs else None), out


#: extra template context of a resource's detail page, by slug (registered by the modules that serve them:
#: ``secgroup`` member/candidate NICs, ``vmextra`` boot order and snapshots), so this module imports neither
DETAIL_SECTIONS: dict[str, Callable[[web.Request, dict[str, Any]], Awaitable[dict[str, Any]]]] = {}


async def detail_page(request: web.Request, *, result: dict[str, Any] | None = None,
                      status: int = 200) -> web.Response:
    res = _res(request)
    key = request.match_info["key"]
    inv, out = await _load(request, res, key)
    if inv is None:
        p = page(request)
        return render(request, "error.html", {**nav(), "title": p._("Not found"), "message": p._(
            "%(what)s %(key)s does not exist (any more).", what=p._(res.label), key=key)}, status=404)
    actions = [a for a in res.actions if a.when(inv)]
    choices = {a.id: await choices_for(request, a.inputs, inv) for a in actions}
    progress = ""
    if res.live == "vm" and inv.get("uuid") in request.app[CORE].jobs.items:
        p = page(request)
        progress = live.progress_label(p._, live.progress_fields(request.app[CORE].jobs.items[inv["uuid"]]))
    scalars = [(k, v) for k, v in inv.items() if not isinstance(v, list | dict)]
    nested = [(k, v) for k, v in inv.items() if isinstance(v, list) and v]
    extra = DETAIL_SECTIONS.get(res.slug)
    sections = await extra(request, inv) if extra is not None else {}
    # the page answers an action's POST too: its language links lead back to the page, not to the action
    return render(request, "detail.html", {"members": [], "candidates": [], "vm": None, **nav(), "res": res,
                                           "path": f"/ui/r/{res.slug}/{key}",
                                           "inv": inv, "key": key, "actions": actions, "choices": choices,
                                           "progress": progress, "scalars": scalars,
                                           "nested": nested, "call": out, "result": result, "confirm": None,
                                           **sections}, status=status)


async def action_post(request: web.Request) -> web.Response:
    res = _res(request)
    key = request.match_info["key"]
    action = res.action(request.match_info["action"])
    p = page(request)
    if action is None:
        raise web.HTTPNotFound(text="no such action")
    inv, _out = await _load(request, res, key)
    if inv is None:
        return await detail_page(request)
    form = await request.post()
    body = form_body(action, inv, form)
    if action.destructive and form.get("confirmed") != "yes":
        from controller.ui.cli import cli_line

        return render(request, "confirm.html", {**nav(), "res": res, "inv": inv, "key": key, "action": action,
                                                "path": f"/ui/r/{res.slug}/{key}",
                                                "cli": cli_line(action.api, body), "values": body})
    if not action.when(inv):
        state = str(inv.get("state"))
        refused = p._("This action is not allowed in state %(s)s.", s=p._(state))
        result: dict[str, Any] = {"call": None, "error": {"code": "", "summary": refused, "details": ""}}
        return await detail_page(request, result=result, status=409)
    out = await api(request, action.api, body, background=True)
    result = {"call": out, "error": out.error(p), "label": action.label}
    if out.ok and out.job is None and (await _load(request, res, key))[0] is None:
        # deleted (or expunged): say so and lead back to the list, not to a "does not exist" page
        return render(request, "gone.html", {**nav(), "res": res, "action": action, "call": out,
                                             "name": inv.get(res.name_field or "uuid") or key,
                                             "path": f"/ui/r/{res.slug}"})
    return await detail_page(request, result=result, status=200 if out.ok else out.status)


def form_body(action: Action, inv: dict[str, Any], form: Any) -> dict[str, Any]:
    """The API body of ``action`` on ``inv`` from a submitted form: its fixed parameters, each input given
    (``number:`` inputs as numbers when they are whole numbers; anything else goes to the API as typed, which
    names the field, the value and what it allows), then the action's ``build``."""
    body = action.params(inv)
    for name, _label, kind in action.inputs:
        value = str(form.get(name, "")).strip()
        if not value:
            continue
        body[name] = int(value) if kind.startswith("number:") and re.fullmatch(r"-?[0-9]{1,12}", value) else value
    return action.build(body) if action.build is not None else body


# --- create forms ---------------------------------------------------------------------------------------

def _creator(request: web.Request) -> tuple[Res, Action]:
    res = _res(request)
    action = res.create(request.match_info["form"])
    if action is None:
        raise web.HTTPNotFound(text="no such form")
    return res, action


async def create_get(request: web.Request) -> web.Response:
    res, action = _creator(request)
    return render(request, "new.html", {**nav(), "res": res, "a": action, "values": {}, "call": None,
                                        "choices": await choices_for(request, action.inputs, {})})


async def create_post(request: web.Request) -> web.Response:
    """Run the create API with the form's values; on success link to the new resource, on refusal show the
    API's error (field, value, what is allowed) above the form with the values kept."""
    res, action = _creator(request)
    p = page(request)
    form = await request.post()
    body = form_body(action, {}, form)
    out = await api(request, action.api, body)
    values = {name: str(form.get(name, "")) for name, _l, _k in action.inputs}
    created = (out.reply.get("inventory") or {}) if out.ok else {}
    return render(request, "new.html", {**nav(), "res": res, "a": action, "values": {} if out.ok else values,
                                        "path": request.path,
                                        "call": out, "error": out.error(p), "created": created,
                                        "choices": await choices_for(request, action.inputs, {})},
                  status=200 if out.ok else out.status)


# --- the VM wizard ---------------------------------------------------------------------------------------

async def _choices(request: web.Request) -> dict[str, Any]:
    async def q(name: str, conds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = await api(request, name, {"conditions": conds, "limit": 500, "sortBy": "name"})
        return list(out.reply.get("inventories", [])) if out.ok else []

    enabled = [{"name": "state", "op": "=", "value": "Enabled"}]
    return {
        "offerings": await q("QueryInstanceOffering", enabled),
        # system images (the router's) are not for users' VMs
        "images": await q("QueryImage", [*enabled, {"name": "status", "op": "=", "value": "Ready"},
                                         {"name": "system", "op": "=", "value": "false"}]),
        "l3s": await q("QueryL3Network", enabled),
        "disks": await q("QueryDiskOffering", enabled),
    }


async def vm_new_get(request: web.Request) -> web.Response:
    return render(request, "vm_new.html", {**nav(), **await _choices(request), "form": {}, "calls": [],
                                            "errors": [], "call_errors": []})


def wizard_bodies(form: Any, p: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The CreateVmInstance bodies of a wizard form, or the form's errors (field, value, what is allowed)."""
    errors: list[str] = []
    name = str(form.get("name", "")).strip()
    if not name:
        errors.append(p._("Name: enter a name."))
    raw_count = str(form.get("count", "1")).strip() or "1"
    count = int(raw_count) if raw_count.isdigit() else 0
    if not 1 <= count <= 50:
        errors.append(p._("Count: %(v)s is not a whole number from 1 to 50.", v=raw_count))
    l3s = [str(v) for v in form.getall("l3NetworkUuids", []) if v]
    default_l3 = str(form.get("defaultL3NetworkUuid", "")) or (l3s[0] if l3s else "")
    if not l3s:
        errors.append(p._("L3 networks: choose at least one."))
    elif default_l3 not in l3s:
        errors.append(p._("Default L3 network: choose one of the selected L3 networks."))
    if errors:
        return [], errors
    tags = []
    userdata = str(form.get("userdata", "")).replace("\r\n", "\n").strip()
    if userdata:
        tags.append(f"userdata::{userdata}")
    sshkey = str(form.get("sshkey", "")).strip()
    if sshkey:
        tags.append(f"sshkey::{sshkey}")
    base: dict[str, Any] = {
        "instanceOfferingUuid": str(form.get("instanceOfferingUuid", "")),
        "imageUuid": str(form.get("imageUuid", "")),
        "l3NetworkUuids": l3s, "defaultL3NetworkUuid": default_l3,
        "dataDiskOfferingUuids": [str(v) for v in form.getall("dataDiskOfferingUuids", []) if v],
    }
    root = str(form.get("rootDiskOfferingUuid", ""))
    if root:
        base["rootDiskOfferingUuid"] = root
    if tags:
        base["systemTags"] = tags
    # resourceUuid chosen here so the page can link to each VM while its creation job still runs
    return [{"name": name if count == 1 else f"{name}-{i + 1}", "resourceUuid": new_uuid(), **base}
            for i in range(count)], []


async def vm_new_post(request: web.Request) -> web.Response:
    p = page(request)
    form = await request.post()
    bodies, errors = wizard_bodies(form, p)
    calls: list[Outcome] = []
    if not errors:
        for body in bodies:
            out = await api(request, "CreateVmInstance", body, background=True)
            calls.append(out)
            if not out.ok:
                break
    ctx = {**nav(), **await _choices(request), "form": form, "calls": calls, "errors": errors,
           "call_errors": [c.error(p) for c in calls if not c.ok]}
    status = 400 if errors else (calls[-1].status if calls and not calls[-1].ok else 200)
    return render(request, "vm_new.html", {**ctx, "path": request.path}, status=status)


# --- bulk actions on selected rows -----------------------------------------------------------------------

BULK_MAX = 100


async def bulk_post(request: web.Request) -> web.Response:
    """One action on the selected rows (at most ``BULK_MAX``); destructive ones ask first. Each row runs its own
    API call; a row whose state does not allow the action is skipped with the reason."""
    res = _res(request)
    p = page(request)
    form = await request.post()
    action = res.action(str(form.get("action", "")))
    keys = list(dict.fromkeys(str(k) for k in form.getall("keys", []) if k))
    if action is None or action.inputs:
        return render(request, "error.html", {"title": p._("Not found"), "message": p._(
            "Choose one of the actions offered for the selected rows.")}, status=400)
    if not keys or len(keys) > BULK_MAX:
        return render(request, "error.html", {"title": p._(res.label), "message": p._(
            "Select from 1 to %(max)s rows (you selected %(n)s).", max=BULK_MAX, n=len(keys))}, status=400)
    rows = []
    for key in keys:
        inv, _out = await _load(request, res, key)
        rows.append((key, inv))
    if action.destructive and form.get("confirmed") != "yes":
        from controller.ui.cli import cli_line

        lines = [cli_line(action.api, action.params(inv)) for _k, inv in rows if inv is not None]
        return render(request, "bulk_confirm.html", {"res": res, "action": action, "rows": rows, "lines": lines,
                                                     "path": f"/ui/r/{res.slug}"})
    results: list[dict[str, Any]] = []
    for key, inv in rows:
        if inv is None:
            results.append({"key": key, "name": key, "call": None, "error": {
                "code": "", "summary": p._("Not found"), "details": ""}})
            continue
        name = str(inv.get(res.name_field or "uuid") or key)
        if not action.when(inv):
            state = str(inv.get("state") or inv.get("status"))
            refused = p._("This action is not allowed in state %(s)s.", s=p._(state))
            results.append({"key": key, "name": name, "call": None,
                            "error": {"code": "", "summary": refused, "details": ""}})
            continue
        out = await api(request, action.api, action.params(inv), background=True)
        results.append({"key": key, "name": name, "call": out, "error": out.error(p)})
    return render(request, "bulk_result.html", {"res": res, "action": action, "results": results,
                                                "path": f"/ui/r/{res.slug}"})
