"""The controller's agent client (DESIGN.md "Controller internals"): one aiohttp session for all hosts.

Guarantees:

* ``await agents.call(host, cmd)`` POSTs ``cmd`` to ``http(s)://{managementIp}:{agentPort}{cmd.PATH}`` with
  the host's bearer token and an ``X-Request-Id``; the same id is sent on every retry, so the agent runs the
  command once. A host with ``agentTls`` is called over HTTPS and its certificate must come from the
  controller's CA and name its management IP (``controller.tls``); a plain-HTTP agent is only one recorded so
  (simulated hosts, ``agent_tls: false``).
* Retries (with exponential backoff) happen only when ``cmd.IDEMPOTENT`` and the failure is a connection
  error or a timeout; an answer from the agent is never retried.
* Errors: no connection / timeout → :class:`AgentUnavailable` (503) naming the host; an agent error body →
  :class:`AgentFailure` (502) carrying the agent's ``code`` and ``message`` in ``cause``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, TypeVar

import aiohttp
from pydantic import ValidationError

from controller.agenturl import agent_url
from controller.core import Controller, on_start
from controller.errors import AgentFailure, AgentUnavailable
from controller.util import new_uuid
from kvmagent.contract.base import POLLED_PATHS, AgentReply, AgentRequest

log = logging.getLogger(__name__)

R = TypeVar("R", bound=AgentReply)
DEFAULT_TIMEOUT = 60.0


def host_label(host: dict[str, Any]) -> str:
    return f"host[uuid:{host['uuid']}, managementIp:{host['managementIp']}]"


def agent_ssl(core: Controller, host: dict[str, Any]) -> ssl.SSLContext | bool:
    """What aiohttp's ``ssl=`` gets for this host: the CA-pinned context for a TLS agent, else True (unused)."""
    if not host.get("agentTls"):
        return True
    return core.services["tls"].agent_ssl  # type: ignore[no-any-return]


class Agents:
    def __init__(self, *, retries: int = 3, backoff: float = 0.3, core: Controller | None = None) -> None:
        self.core = core
        self.retries = retries
        self.backoff = backoff
        self._session: aiohttp.ClientSession | None = None
        #: host uuid → the controller URL its agent reports to (set by the connect sequence)
        self.controller_urls: dict[str, str] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            conn = aiohttp.TCPConnector(limit=0, limit_per_host=32)
            self._session = aiohttp.ClientSession(connector=conn, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, host: dict[str, Any], cmd: AgentRequest, *, timeout: float | None = None) -> Any:
        """Run ``cmd`` on ``host`` (a Host row: managementIp, agentPort, agentToken) and return its Reply."""
        url = agent_url(host) + cmd.PATH
        rid = new_uuid()
        headers = {"Authorization": f"Bearer {host['agentToken']}", "X-Request-Id": rid}
        body = cmd.model_dump(mode="json")
        vm = body.get("vmUuid") or (body.get("uuid") if cmd.PATH.startswith("/vm/") else None)
        log.log(logging.DEBUG if cmd.PATH in POLLED_PATHS else logging.INFO,
                "agent call path=%s host=%s request_id=%s%s", cmd.PATH, host.get("uuid"), rid,
                f" vm={vm}" if isinstance(vm, str) else "")
        attempts = self.retries + 1 if cmd.IDEMPOTENT else 1
        delay = self.backoff
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                return await self._post(host, cmd, url, body, headers, timeout or DEFAULT_TIMEOUT)
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                last = e
                if attempt + 1 < attempts:
                    await asyncio.sleep(delay)
                    delay *= 2
        raise AgentUnavailable(f"the agent of {host_label(host)} is unreachable at {url}: "
                               f"{type(last).__name__}: {last or 'timeout'}; check that the agent runs "
                               "and the host is reachable (ReconnectHost redeploys it)")

    async def _post(self, host: dict[str, Any], cmd: AgentRequest, url: str, body: dict[str, Any],
                    headers: dict[str, str], timeout: float) -> Any:
        tls: ssl.SSLContext | bool = True
        if host.get("agentTls"):
            if self.core is None:
                raise AgentUnavailable(f"{host_label(host)} serves TLS but this agent client has no CA")
            tls = agent_ssl(self.core, host)
        async with self.session().post(url, json=body, headers=headers, ssl=tls,
                                       timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
        if resp.status != 200:
            err = (data or {}).get("error") if isinstance(data, dict) else None
            code = err.get("code", "AGENT.HTTP") if isinstance(err, dict) else "AGENT.HTTP"
            message = err.get("message", "") if isinstance(err, dict) else f"HTTP {resp.status}"
            raise AgentFailure(f"{cmd.PATH} on {host_label(host)} failed: {code}: {message}",
                               cause={"code": code, "description": message, "details": err,
                                      "httpStatus": resp.status})
        try:
            return cmd.Reply.model_validate(data)
        except ValidationError as e:
            raise AgentFailure(f"{cmd.PATH} on {host_label(host)} returned an invalid reply: {e}") from e


@on_start(30, "agents")
async def _start(core: Controller) -> None:
    core.services["agents"] = Agents(core=core)
