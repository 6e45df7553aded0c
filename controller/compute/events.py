"""``POST /v1/agent/events``: VM state reports and "reconnect me" from the agents (reference §3.9).

Authenticated by the host's bearer token (an unknown token → 401); the report's ``hostUuid`` must be the
token's host, and a VM report must be about a VM the database places on that host (``placement``; 403
otherwise). VM reports go through the tracer (stale ones are dropped there); ``reconnectMe`` schedules a
reconnect of the host in its queue.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from controller.api.appkeys import CORE
from controller.compute import placement, tracer
from controller.errors import AuthenticationFailed, InvalidArgument, PermissionDenied

log = logging.getLogger(__name__)


class VmStateReport(BaseModel):
    model_config = ConfigDict(extra="ignore")
    hostUuid: str
    vmUuid: str
    vmState: Literal["Running", "Stopped", "Paused", "Crashed", "Unknown"]
    reason: str | None = None
    ts: float | None = None


class ReconnectMe(BaseModel):
    model_config = ConfigDict(extra="ignore")
    hostUuid: str
    kind: Literal["reconnectMe"]
    reason: str | None = None


async def handle_agent_event(request: web.Request) -> web.Response:
    core = request.app[CORE]
    auth = request.headers.get("Authorization", "")
    token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
    host = await core.db.fetchone("SELECT uuid FROM Host WHERE agentToken=?", (token,)) if token else None
    if host is None:
        raise AuthenticationFailed("agent event refused: missing or unknown host token "
                                   "(Authorization: Bearer <host token>)")
    try:
        body = json.loads(await request.read())
        report: VmStateReport | ReconnectMe = (ReconnectMe.model_validate(body) if body.get("kind")
                                               else VmStateReport.model_validate(body))
    except (ValueError, ValidationError, AttributeError) as e:
        raise InvalidArgument(f"invalid agent event: {e}") from e
    if report.hostUuid != host["uuid"]:
        raise AuthenticationFailed(f"agent event for host {report.hostUuid} sent with the token of host "
                                   f"{host['uuid']}")
    if isinstance(report, ReconnectMe):
        log.warning("host %s asks to be reconnected: %s", host["uuid"], report.reason)
        core.services["hostTracker"].schedule_reconnect(host["uuid"])
    else:
        if not await placement.may_report(core, host["uuid"], report.vmUuid):
            raise PermissionDenied(f"host[uuid:{host['uuid']}] may not report on vm[uuid:{report.vmUuid}]: the "
                                   "database places that vm on another host")
        await tracer.apply_report(core, host["uuid"], report.vmUuid, report.vmState)
    return web.json_response({"success": True})
