"""HTTP routes of the controller: ``POST /v1/{ApiName}``, jobs, health, metrics, OpenAPI.

Request path: middleware (errors → HTTP, metrics) → :func:`handle_api` (lookup, the session of the
``Authorization`` header checked BEFORE the body is read, body read under a size cap) → :func:`call_api`
(session, validation, per-resource queue, job) → the API's handler in a service module → services → agent client.

Bodies: at most :data:`MAX_BODY` bytes (413 beyond); a caller without a valid header session (login, or a 1.0
client that puts the session in the body) gets at most :data:`MAX_ANON_BODY` bytes read, and a body is
read within :data:`BODY_READ_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from controller.api.appkeys import CORE
from controller.api.context import ApiContext
from controller.api.registry import ApiSpec, lookup
from controller.api.validation import invalid_argument
from controller.compute.events import handle_agent_event
from controller.core import Controller

if TYPE_CHECKING:
    from controller.identity import SessionInfo
from controller.errors import ApiError, InvalidArgument, InvalidSession, UnknownApi
from controller.metrics import CONTENT_TYPE, UNKNOWN

log = logging.getLogger(__name__)

DEFAULT_JOB_WAIT = 1800.0
#: largest API body read (bytes); 413 beyond
MAX_BODY = 4 << 20
#: largest body read before the caller is known (no valid session in the Authorization header)
MAX_ANON_BODY = 64 << 10
#: seconds to receive a whole body once its headers are in
BODY_READ_TIMEOUT = 30.0
#: routes other than ``/v1/{api}`` that are metric labels (their patterns, never the raw path)
_ROUTE_LABELS = frozenset({"/v1/jobs/{uuid}", "/metrics", "/healthz", "/readyz", "/v1/openapi.json",
                           "/v1/agent/events"})


class BodyTooLarge(InvalidArgument):
    status = 413


def metric_label(request: web.Request) -> str:
    """The request's metric label: a registered API name, one of our route patterns, or ``unknown``."""
    if request.path.startswith("/ui"):
        return "/ui"  # the web console: one label, not one per page/resource
    name = request.match_info.get("api")
    if name is not None:
        spec = lookup(name)
        return spec.name if spec is not None else UNKNOWN
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else None
    return canonical if canonical in _ROUTE_LABELS else UNKNOWN


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body, indent=None, default=str), status=status,
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    core = request.app[CORE]
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except ApiError as e:
        status = e.status
        return _json(e.body(), e.status)
    except web.HTTPRequestEntityTooLarge as e:
        status = e.status
        return _json(BodyTooLarge(f"the request body is larger than {MAX_BODY} bytes, the most this API "
                                  "reads").body(), e.status)
    except web.HTTPException as e:
        status = e.status
        raise
    except Exception:
        log.exception("internal error in %s", request.path)
        return _json(ApiError("an internal error happened; see the controller log").body(), 500)
    finally:
        core.metrics.observe(metric_label(request), status, time.perf_counter() - t0)


def header_session(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:6].lower() == "oauth ":
        return auth[6:].strip()
    return None


def session_uuid(request: web.Request, body: dict[str, Any]) -> str | None:
    header = header_session(request)
    if header is not None:
        return header
    s = body.get("session")
    if isinstance(s, dict):
        return s.get("uuid")
    return s if isinstance(s, str) else None


async def _read_bytes(request: web.Request, cap: int) -> bytes:
    """The body, at most ``cap`` bytes (BodyTooLarge otherwise, before reading when Content-Length says so)."""
    too_large = BodyTooLarge(f"the request body is larger than {cap} bytes, the most this API reads"
                             + ("" if cap >= MAX_BODY else " before a session is known (send 'Authorization: "
                                "OAuth <session uuid>')"))
    if request.content_length is not None and request.content_length > cap:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT):
            async for chunk in request.content.iter_chunked(64 << 10):
                size += len(chunk)
                if size > cap:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise InvalidArgument(f"the request body was not received within {BODY_READ_TIMEOUT:.0f} s",
                              status=408) from None
    return b"".join(chunks)


async def _read_body(request: web.Request, cap: int = MAX_BODY) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await _read_bytes(request, cap))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"the request body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object of the API's parameters")
    return body


async def call_api(core: Controller, spec: ApiSpec, body: dict[str, Any], session: str | None,
                   *, background: bool = False, checked: SessionInfo | None = None,
                   source: str | None = None) -> tuple[int, dict[str, Any]]:
    """Validate and run one API call; returns (HTTP status, reply body). ``checked``: ``session`` was
    already checked (its SessionInfo)."""
    ctx = ApiContext(core, spec.name, raw_session=session, source=source)
    if checked is not None:
        ctx.session = checked
    elif spec.session:
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
    checked: SessionInfo | None = None
    header = header_session(request)
    if spec.session and header is not None:
        # The session first: nobody gets a body read, let alone parsed, without one.
        checked = await core.services["identity"].check_session(header, spec.name)
    try:
        body = await _read_body(request, MAX_BODY if checked is not None else MAX_ANON_BODY)
    except BodyTooLarge:
        if spec.session and checked is None:
            raise InvalidSession(f"session of message[{spec.name}] is null; log in with LogInByAccount and "
                                 "send 'Authorization: OAuth <session uuid>'") from None
        raise
    background = request.query.get("async", "").lower() in ("1", "true", "yes")
    status, reply = await call_api(core, spec, body, session_uuid(request, body), background=background,
                                   checked=checked, source=request.remote)
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
    core.metrics.queues_busy.set(core.queues.busy())
    return web.Response(body=core.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


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
