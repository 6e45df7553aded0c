"""The agent's aiohttp application (DESIGN.md "Controller ↔ agent contract").

``create_app(config, driver=...)`` builds it; ``kvmagent.main`` runs it. Guarantees:

* every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>`` (401 otherwise);
* bodies are validated with the endpoint's request model (400 naming each bad field);
* a repeated ``X-Request-Id`` returns the first reply; a duplicate in flight waits for the first;
* a coded error (``AgentError``, ``StorageError``, ``FlatNetError``) → its status and ErrorBody; anything
  else → 500 with the traceback logged;
* commands answer 503 ``AGENT.NOT_READY`` until start-up reconcile is done (``/host/ping`` always works);
* ``/readyz`` is 503 until then, ``/metrics`` serves Prometheus text.
"""

from __future__ import annotations

import hmac
import importlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from kvmagent import tickets
from kvmagent.appkeys import CTX, TASKS
from kvmagent.config import AgentConfig
from kvmagent.context import AgentContext
from kvmagent.contract.base import POLLED_PATHS, AgentError
from kvmagent.contract.host import PingCmd
from kvmagent.contract.tls import peer_context
from kvmagent.dedup import Reply, ReplyCache
from kvmagent.driver.base import HypervisorDriver
from kvmagent.events import EventReporter, Judger, StateTracker
from kvmagent.handlers import MODULES
from kvmagent.lifecycle import lifecycle
from kvmagent.metrics import CONTENT_TYPE, UNKNOWN, Metrics
from kvmagent.routing import ENDPOINTS, Endpoint, error_response
from kvmagent.vmops import VmOps
from zsutil.errors import CodedError
from zsutil.tasks import TaskGroup

log = logging.getLogger(__name__)

REPLIES = web.AppKey("agent_replies", ReplyCache)
OPEN_PATHS = frozenset({"/healthz"})
BEFORE_READY = frozenset({PingCmd.PATH})


def load_handlers() -> None:
    """Import every handler module (each registers its endpoints with ``kvmagent.routing``)."""
    for name in MODULES:
        importlib.import_module(name)


def _validation_error(endpoint: Endpoint, e: ValidationError) -> AgentError:
    errs = [{"field": ".".join(map(str, err["loc"])) or "(body)", "message": err["msg"],
             "value": err.get("input") if not isinstance(err.get("input"), dict) else None}
            for err in e.errors()]
    summary = "; ".join(f"{x['field']}: {x['message']}" for x in errs)
    return AgentError("AGENT.INVALID_REQUEST", f"invalid {endpoint.request.__name__}: {summary}",
                      status=400, details={"errors": json.loads(json.dumps(errs, default=str))})


def log_request(path: str, rid: str | None, status: int, seconds: float, body: dict[str, Any]) -> None:
    """One structured ``key=value`` line per command: the controller logs the same ``request_id`` when it
    sends it, so one operation can be followed across both logs (journald: ``journalctl -u
    zstack-py-kvmagent``). The VM's uuid is added for commands about one VM."""
    vm = body.get("vmUuid") or (body.get("uuid") if path.startswith("/vm/") else None)
    log.log(logging.DEBUG if path in POLLED_PATHS else logging.INFO,
            "request path=%s request_id=%s status=%d seconds=%.3f%s", path, rid or "-", status, seconds,
            f" vm={vm}" if isinstance(vm, str) else "")


def _endpoint_handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CTX]
        if not ctx.ready and endpoint.path not in BEFORE_READY:
            raise AgentError("AGENT.NOT_READY", f"agent not ready: {ctx.not_ready_reason}", status=503)
        try:
            body = await request.json() if request.body_exists else {}
        except json.JSONDecodeError as e:
            raise AgentError("AGENT.INVALID_REQUEST", f"body is not valid JSON: {e}", status=400) from e
        if not isinstance(body, dict):
            raise AgentError("AGENT.INVALID_REQUEST", "body must be a JSON object", status=400)
        try:
            cmd = endpoint.request.model_validate(body)
        except ValidationError as e:
            raise _validation_error(endpoint, e) from e

        async def run() -> Reply:
            try:
                reply = await endpoint.handler(ctx, cmd)
            except CodedError as e:
                return e.status, e.body()
            return 200, reply.model_dump(mode="json")

        rid = request.headers.get("X-Request-Id")
        t0 = time.perf_counter()
        status, payload = await (request.app[REPLIES].run(f"{endpoint.path} {rid}", run) if rid else run())
        log_request(endpoint.path, rid, status, time.perf_counter() - t0, body)
        return web.json_response(payload, status=status)

    return handle


@web.middleware
async def metrics_mw(request: web.Request, handler: Any) -> web.StreamResponse:
    t0 = time.perf_counter()
    status = 500
    try:
        resp: web.StreamResponse = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        route = request.match_info.route.resource
        path = route.canonical if route is not None else UNKNOWN
        request.app[CTX].metrics.observe_request(path, status, time.perf_counter() - t0)


@web.middleware
async def auth_mw(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path not in OPEN_PATHS:
        token = request.app[CTX].config.token
        got = request.headers.get("Authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
            ticket = _ticket(request, got)
            if ticket is None:
                return error_response(AgentError("AGENT.UNAUTHORIZED", "missing or wrong bearer token "
                                                 "(Authorization: Bearer <host token>)", status=401))
            try:
                if request.path == tickets.RECEIVE_PATH:
                    tickets_of(request).check_receive(ticket, request.headers.get("X-Zs-Path", ""),
                                                      request.headers.get("X-Zs-Size"))
                else:
                    try:
                        body = await request.json()
                    except ValueError as e:
                        raise AgentError("AGENT.INVALID_REQUEST", f"body is not valid JSON: {e}", status=400) from e
                    tickets_of(request).check_json(ticket, request.path, body)
            except AgentError as e:
                return error_response(e)
    result: web.StreamResponse = await handler(request)
    return result


def tickets_of(request: web.Request) -> tickets.Tickets:
    return request.app[CTX].tickets


def _ticket(request: web.Request, auth: str) -> tickets.Ticket | None:
    """The live transfer ticket presented as the bearer, on one of the three endpoints a ticket opens."""
    if request.path not in tickets.TICKET_PATHS or not auth.startswith("Bearer "):
        return None
    return tickets_of(request).find(auth.removeprefix("Bearer ").strip())


@web.middleware
async def errors_mw(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        result: web.StreamResponse = await handler(request)
        return result
    except CodedError as e:
        return error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error_response(AgentError("AGENT.HTTP", f"{request.method} {request.path}: {e.reason}",
                                         status=e.status))
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(AgentError("AGENT.INTERNAL", f"internal error serving {request.path}; "
                                         "see the agent log"))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "bootId": request.app[CTX].boot_id})


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    if ctx.ready:
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "reason": ctx.not_ready_reason}, status=503)


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    domains: dict[str, int] = {}
    if ctx.ready:
        try:
            for state in (await ctx.driver.list_vms()).values():
                domains[str(state)] = domains.get(str(state), 0) + 1
        except AgentError:
            pass
    return web.Response(body=ctx.metrics.render(domains), headers={"Content-Type": CONTENT_TYPE})


def build_context(config: AgentConfig, driver: HypervisorDriver, *, flatnet: Any = None,
                  storage: Any = None, secgroup: Any = None, reporter_backoff: tuple[float, float] = (0.2, 10.0),
                  judger_ttl: float = 10.0) -> AgentContext:
    m = Metrics()
    reporter = EventReporter(config.host_uuid, config.controller_url, config.token, metrics=m,
                             backoff=reporter_backoff, tls=peer_context(config.tls_ca))
    judger = Judger(ttl=judger_ttl)
    vms = VmOps(driver, judger)
    tracker = StateTracker(judger, reporter, m, on_reboot=vms.on_guest_reboot)
    return AgentContext(config=config, driver=driver, events=reporter, judger=judger, tracker=tracker,
                        vms=vms, metrics=m, flatnet=flatnet, storage=storage, secgroup=secgroup)


def create_app(config: AgentConfig, *, driver: HypervisorDriver, flatnet: Any = None,
               storage: Any = None, secgroup: Any = None, reporter_backoff: tuple[float, float] = (0.2, 10.0),
               judger_ttl: float = 10.0) -> web.Application:
    """The agent application. ``flatnet``/``storage`` are the data-plane services (started before ready)."""
    load_handlers()
    app = web.Application(middlewares=[metrics_mw, auth_mw, errors_mw], client_max_size=4 << 20)
    app[CTX] = build_context(config, driver, flatnet=flatnet, storage=storage, secgroup=secgroup,
                             reporter_backoff=reporter_backoff, judger_ttl=judger_ttl)
    app[REPLIES] = ReplyCache()
    app[TASKS] = TaskGroup()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    for endpoint in ENDPOINTS.values():
        app.router.add_post(endpoint.path, _endpoint_handler(endpoint))
    if storage is not None:
        # Streaming endpoints (host-to-host volume copy): not JSON, same bearer-token middleware.
        from kvmagent.handlers.storage import raw_routes

        app.router.add_routes(raw_routes(app[CTX]))
    app.cleanup_ctx.append(lifecycle)
    return app


async def wait_ready(app: web.Application) -> None:
    """For embedders (simulated hosts, tests): wait until start-up reconcile is done (bound it yourself)."""
    await app[CTX].ready_event.wait()


__all__ = ["CTX", "create_app", "wait_ready"]
