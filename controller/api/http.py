"""HTTP routes of the controller: ``POST /v1/{ApiName}``, jobs, health, metrics, OpenAPI.

Request path: middleware (errors → HTTP, metrics) → :func:`call_api` (lookup, session, validation,
per-resource queue, job) → the API's handler in a service module → services → agent client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from controller.api.context import ApiContext
from controller.api.registry import ApiSpec, lookup
from controller.api.validation import invalid_argument
from controller.compute.events import handle_agent_event
from controller.core import Controller
from controller.errors import ApiError, InvalidArgument, UnknownApi

log = logging.getLogger(__name__)

CORE = web.AppKey("core", Controller)
DEFAULT_JOB_WAIT = 1800.0


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, indent=None, default=str), status=status,
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    core = request.app[CORE]
    t0 = time.perf_counter()
    label = request.match_info.get("api", request.path)
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except ApiError as e:
        status = e.status
        return _json(e.body(), e.status)
    except web.HTTPException as e:
        status = e.status
        raise
    except Exception:
        log.exception("internal error in %s", request.path)
        return _json(ApiError("an internal error happened; see the controller log").body(), 500)
    finally:
        if label.startswith("/v1/jobs"):
            label = "/v1/jobs"
        elif label.startswith("/ui"):
            label = "/ui"  # the web console: one label, not one per page/resource
        core.metrics.observe(label, status, time.perf_counter() - t0)


def session_uuid(request: web.Request, body: dict[str, Any]) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:6].lower() == "oauth ":
        return auth[6:].strip()
    s = body.get("session")
    if isinstance(s, dict):
        return s.get("uuid")
    return s if isinstance(s, str) else None


async def _read_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"the request body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object of the API's parameters")
    return body


async def call_api(core: Controller, spec: ApiSpec, body: dict[str, Any], session: str | None,
                   *, background: bool = False) -> tuple[int, dict[str, Any]]:
    """Validate and run one API call; returns (HTTP status, reply body)."""
    ctx = ApiContext(core, spec.name, raw_session=session)
    if spec.session:
        ctx.session = await core.services["identity"].check_session(session, spec.name)
    try:
        msg = spec.model.model_validate(body)
    except ValidationError as e:
        raise invalid_argument(spec.name, e) from e
    key = spec.queue(msg) if spec.queue else None

    async def run() -> dict[str, Any]:
        return await core.queues.run(key, lambda: spec.handler(ctx, msg))

    if not spec.job:
        return 200, {"success": True, **await run()}

    async def work() -> tuple[int, dict[str, Any]]:
        try:
            return 200, {"success": True, **await run()}
        except ApiError as e:
            return e.status, e.body()
        except Exception:
            log.exception("job %s failed", spec.name)
            return 500, ApiError("an internal error happened; see the controller log").body()

    job_uuid, task = await core.jobs.submit(spec.name, key, ctx.session.uuid if ctx.session else None, work)
    accepted = {"success": True, "jobUuid": job_uuid, "location": f"/v1/jobs/{job_uuid}"}
    if background:
        return 202, accepted
    wait = msg.timeout / 1000.0 if msg.timeout and msg.timeout > 0 else DEFAULT_JOB_WAIT
    try:
        return await asyncio.wait_for(asyncio.shield(task), wait)
    except TimeoutError:
        return 202, {**accepted, "warnings": [f"the job did not finish within {wait:.0f} s; poll "
                                              f"/v1/jobs/{job_uuid}"]}


async def handle_api(request: web.Request) -> web.Response:
    core = request.app[CORE]
    name = request.match_info["api"]
    spec = lookup(name)
    if spec is None:
        raise UnknownApi(f"{name!r} is not an API; see GET /v1/openapi.json for the list")
    body = await _read_body(request)
    background = request.query.get("async", "").lower() in ("1", "true", "yes")
    status, reply = await call_api(core, spec, body, session_uuid(request, body), background=background)
    return _json(reply, status)


async def handle_job(request: web.Request) -> web.Response:
    core = request.app[CORE]
    await core.services["identity"].check_session(session_uuid(request, {}), "GetJob")
    return _json(await core.jobs.get(request.match_info["uuid"]))


async def handle_healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    core = request.app[CORE]
    return _json({"ready": core.ready}, 200 if core.ready else 503)


async def handle_metrics(request: web.Request) -> web.Response:
    core = request.app[CORE]
    core.metrics.gauges["zstack_work_queues_busy"] = core.queues.busy()
    return web.Response(text=core.metrics.render(), content_type="text/plain")


async def handle_openapi(request: web.Request) -> web.Response:
    from controller.api.openapi import openapi_document

    return _json(openapi_document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/v1/openapi.json", handle_openapi)
    app.router.add_get("/v1/jobs/{uuid}", handle_job)
    app.router.add_post("/v1/agent/events", handle_agent_event)
    app.router.add_post("/v1/{api}", handle_api)
    app.router.add_put("/v1/{api}", handle_api)
