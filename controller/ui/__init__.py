"""The web console, served by the controller on its own port under ``/ui/`` (``/`` redirects there; the JSON
API stays at ``/v1/``). Server-rendered Jinja2 pages (aiohttp-jinja2), htmx 2 and noVNC vendored under
``static/vendor/``, gettext catalogs in ``locale/``. Every action runs through the API dispatcher
(:func:`controller.ui.web.api`) under the signed-in user's session and shows its ``zstack-cli`` line.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from aiohttp import web

from controller.ui import console, live, secgroup, spice, views, vmextra
from controller.ui.web import SECRET, setup_envs, ui_middleware

STATIC = Path(__file__).parent / "static"


def setup_ui(app: web.Application) -> None:
    app[SECRET] = secrets.token_bytes(32)
    setup_envs(app)
    app.middlewares.append(ui_middleware)
    r = app.router
    r.add_get("/", views.root)
    r.add_get("/ui", views.root)
    r.add_static("/ui/static/", STATIC, append_version=False)
    r.add_get("/ui/login", views.login_get)
    r.add_post("/ui/login", views.login_post)
    r.add_post("/ui/logout", views.logout)
    r.add_get("/ui/lang", views.set_language)
    r.add_get("/ui/", views.dashboard)
    r.add_get("/ui/jobs", views.jobs_page)
    r.add_get("/ui/jobs/panel", views.jobs_panel)
    r.add_get("/ui/events", live.events)
    r.add_get("/ui/vms/new", views.vm_new_get)
    r.add_post("/ui/vms/new", views.vm_new_post)
    r.add_get("/ui/security-groups/new", secgroup.sg_new_get)
    r.add_post("/ui/security-groups/new", secgroup.sg_new_post)
    r.add_get("/ui/vms/{uuid}/console", console.console_page)
    r.add_get("/ui/vms/{uuid}/console.vv", spice.vv_download)
    r.add_post("/ui/vms/{uuid}/boot-order", vmextra.boot_order_post)
    r.add_get("/ui/console/ws", console.console_ws)
    r.add_get("/ui/r/{slug}", views.list_page)
    r.add_get("/ui/r/{slug}/new/{form}", views.create_get)
    r.add_post("/ui/r/{slug}/new/{form}", views.create_post)
    r.add_get("/ui/r/{slug}/{key}", views.detail_page)
    r.add_post("/ui/r/{slug}/{key}/act/{action}", views.action_post)
    r.add_post("/ui/r/{slug}/bulk", views.bulk_post)
