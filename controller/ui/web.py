"""Request plumbing of the console: per-language Jinja environments, the session cookie, CSRF, and
:func:`api`, which runs an API through the same dispatcher as ``POST /v1/{ApiName}`` (``call_api``)
under the signed-in user's session.

Cookies: ``zs_session`` (the ZStack session uuid; HttpOnly, SameSite=Strict, Secure over HTTPS, max-age =
the session's remaining life from ``identity/session.timeout``), ``zs_lang`` (the language), ``zs_login_csrf``
(double-submit token of the sign-in form). The CSRF token of a signed-in page is HMAC(secret, session uuid)
and must come back with every POST (form field ``csrf`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from controller.api.http import CORE, call_api
from controller.api.registry import lookup
from controller.errors import ApiError, InvalidSession
from controller.identity import SessionInfo
from controller.ui import i18n
from controller.ui.cli import cli_line
from controller.ui.resources import GROUPS, RESOURCES

NAV_GROUPS = [(g, [r for r in RESOURCES if r.group == g]) for g in GROUPS]
TEMPLATES = Path(__file__).parent / "templates"
SESSION_COOKIE = "zs_session"
LOGIN_CSRF_COOKIE = "zs_login_csrf"
SECRET = web.AppKey("ui_secret", bytes)
ENV_KEYS = {lang: web.AppKey(f"ui_jinja_{lang}", jinja2.Environment) for lang in i18n.LANGUAGES}
VERSION_TAG = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((Path(__file__).parent / "static")
                                                                      .glob("*.*")))).hexdigest()[:10]

#: translated summaries of ZStack error codes (details stay in English, as the API sent them)
ERROR_SUMMARIES: dict[str, str] = {
    "SYS.1007": i18n.N_("One or more arguments are invalid"),
    "SYS.1003": i18n.N_("The resource could not be found"),
    "SYS.1006": i18n.N_("The operation failed"),
    "VM.1010": i18n.N_("The VM's state does not allow this operation"),
    "ID.1000": i18n.N_("Wrong account name or password"),
    "ID.1001": i18n.N_("Your session has expired; sign in again"),
    "ID.1002": i18n.N_("Permission denied"),
    "SYS.1001": i18n.N_("The operation timed out"),
    "SYS.1000": i18n.N_("An internal error happened"),
}


def setup_envs(app: web.Application) -> None:
    for lang, key in ENV_KEYS.items():
        env = aiohttp_jinja2.setup(app, app_key=key, loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                   autoescape=jinja2.select_autoescape(["html"]),
                                   extensions=["jinja2.ext.i18n"], undefined=jinja2.StrictUndefined)
        env.install_gettext_translations(i18n.translations(lang), newstyle=True)  # type: ignore[attr-defined]
        fmt = i18n.Formatter(lang)
        env.filters.update(number=fmt.number, size=fmt.size, date=fmt.date)
        env.globals.update(percent=fmt.percent, LANGUAGES=i18n.LANGUAGES, lang=lang, html_lang=lang.replace("_", "-"),
                           v=VERSION_TAG)


@dataclass
class Page:
    """What every signed-in handler knows about its request."""

    request: web.Request
    lang: str
    session: SessionInfo | None
    csrf: str

    def _(self, text: str, **kw: Any) -> str:
        t = i18n.translations(self.lang).gettext(text)
        return t % kw if kw else t


PAGE = web.RequestKey("ui_page", Page)


def csrf_for(app: web.Application, session_uuid: str) -> str:
    return hmac.new(app[SECRET], session_uuid.encode(), hashlib.sha256).hexdigest()


def page(request: web.Request) -> Page:
    p = request.get(PAGE)
    if p is None:
        p = Page(request, i18n.choose(request), None, "")
        request[PAGE] = p
    return p  # type: ignore[no-any-return]


def render(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    p = page(request)
    # ``path``: where the language links come back to; a POST's own path may take no GET (an action), so a page
    # answering a POST names its page (``path`` in ``context``) or the links lead to the dashboard
    ctx = {"groups": NAV_GROUPS, "page": p, "csrf": p.csrf, "session": p.session,
           "path": request.path_qs if request.method == "GET" else "/ui/",
           "error": None, "result": None, **context}
    return aiohttp_jinja2.render_template(template, request, ctx, status=status, app_key=ENV_KEYS[p.lang])


def safe_next(value: str | None) -> str:
    """A local UI path to go back to (never another site)."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


def login_redirect(request: web.Request) -> web.Response:
    target = "/ui/login?next=" + quote(request.path_qs if request.method == "GET" else "/ui/", safe="")
    if request.headers.get("HX-Request"):
        return web.Response(status=200, headers={"HX-Redirect": target})
    raise web.HTTPSeeOther(target)


async def session_from_cookie(request: web.Request) -> SessionInfo | None:
    uuid = request.cookies.get(SESSION_COOKIE)
    if not uuid:
        return None
    try:
        info: SessionInfo = await request.app[CORE].services["identity"].check_session(uuid, "WebConsole")
    except InvalidSession:
        return None
    return info


def set_session_cookie(request: web.Request, resp: web.StreamResponse, inv: dict[str, Any]) -> None:
    expires = datetime.fromisoformat(str(inv["expiredDate"]).replace("Z", "+00:00"))
    max_age = max(1, int((expires - datetime.now(UTC)).total_seconds()))
    resp.set_cookie(SESSION_COOKIE, inv["uuid"], max_age=max_age, path="/", httponly=True, samesite="Strict",
                    secure=request.secure)


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


#: every console page: no framing, no inline or foreign scripts, connections only to this origin
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@web.middleware
async def ui_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every ``/ui/`` path but the sign-in page, the language switch and static files needs a session; every
    POST under ``/ui/`` but sign-in needs the session's CSRF token. Pages get :data:`SECURITY_HEADERS`."""
    path = request.path
    if not path.startswith("/ui"):
        return await handler(request)  # type: ignore[no-any-return]
    resp = await _ui(request, handler)
    if isinstance(resp, web.Response) and not resp.prepared:
        resp.headers.update(SECURITY_HEADERS)
    return resp


async def _ui(request: web.Request, handler: Any) -> web.StreamResponse:
    path = request.path
    if path.startswith("/ui/static/"):
        return await handler(request)  # type: ignore[no-any-return]
    p = page(request)
    if path in ("/ui/login", "/ui/lang"):
        return await handler(request)  # type: ignore[no-any-return]
    info = await session_from_cookie(request)
    if info is None:
        if path in ("/ui/console/ws", "/ui/events"):  # not pages: no redirect (and no token in a URL)
            raise web.HTTPForbidden(text="sign in first: no valid session")
        return login_redirect(request)
    p.session = info
    p.csrf = csrf_for(request.app, info.uuid)
    if request.method == "POST":
        sent = request.headers.get("X-CSRF-Token") or str((await request.post()).get("csrf", ""))
        if not hmac.compare_digest(sent.encode(), p.csrf.encode()):
            return render(request, "error.html", {"title": p._("Form expired"), "message": p._(
                "The form's security token is missing or wrong. Reload the page and try again.")}, status=403)
    return await handler(request)  # type: ignore[no-any-return]


@dataclass
class Outcome:
    """One API call made from the console: the CLI line, HTTP status and reply."""

    api: str
    cli: str
    status: int
    reply: dict[str, Any]
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status < 400 and bool(self.reply.get("success"))

    @property
    def job(self) -> str | None:
        return self.reply.get("jobUuid") if self.status == 202 else None

    def error(self, p: Page) -> dict[str, Any] | None:
        if self.ok:
            return None
        err = self.reply.get("error") or {}
        code = err.get("code", "SYS.1000")
        summary = ERROR_SUMMARIES.get(code)
        return {"code": code, "summary": p._(summary) if summary else err.get("description", ""),
                "details": err.get("details", "")}


async def api(request: web.Request, name: str, body: dict[str, Any], *, background: bool = False) -> Outcome:
    """Run API ``name`` through the API dispatcher under the signed-in user's session."""
    spec = lookup(name)
    if spec is None:
        raise web.HTTPNotFound(text=f"{name} is not an API")
    sess = page(request).session
    try:
        status, reply = await call_api(request.app[CORE], spec, dict(body), sess.uuid if sess else None,
                                       background=background)
    except ApiError as e:
        status, reply = e.status, e.body()
    return Outcome(name, cli_line(name, body), status, reply, dict(body))
