"""TLS on the controller's side (issue 18, security 10): the CA, the controller's certificate, the agents'
events listener, and the client context the agent client pins.

* At start: the CA (``controller.pki``, made at first start in ``tls_dir``) and the controller's own
  certificate ``controller.crt``/``controller.key`` (0600) in the same directory, issued again when it does
  not cover this controller's names (``pki.CONTROLLER_NAME``, localhost, this host's name, ``tls_names``,
  ``listen_host``/``public_url`` when they name one) or nears its end.
* The events channel: agents deployed with TLS report to ``https://<controller address>:agent_tls_port
  /v1/agent/events`` and verify the controller's certificate against the CA and ``CONTROLLER_NAME``. This
  listener serves only that path and ``/healthz``; it starts when the first TLS host is deployed (or at
  start when TLS hosts exist), so a controller without TLS hosts binds nothing more. The bearer token is
  still checked on every report.
* :meth:`Tls.agent_ssl` is the client context of the agent client: only the CA, and the host's management
  IP must be in the agent's certificate.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from urllib.parse import urlparse

from aiohttp import web

from controller import pki
from controller.api.appkeys import CORE
from controller.config import ControllerConfig
from controller.core import Controller, on_start
from controller.errors import OperationError

log = logging.getLogger(__name__)
EVENTS_BODY_MAX = 1 << 20


def tls_dir(cfg: ControllerConfig) -> Path:
    return Path(cfg.tls_dir) if cfg.tls_dir else Path(cfg.db_path).parent / "pki"


def controller_names(cfg: ControllerConfig) -> list[str]:
    """The names in the controller's certificate."""
    names = [pki.CONTROLLER_NAME, "localhost", "127.0.0.1", "::1", socket.gethostname(), *cfg.tls_names]
    if cfg.listen_host not in ("0.0.0.0", "::", ""):
        names.append(cfg.listen_host)
    if cfg.public_url and urlparse(cfg.public_url).hostname:
        names.append(str(urlparse(cfg.public_url).hostname))
    return list(dict.fromkeys(names))


def ensure_controller_cert(core_or_config: Controller | ControllerConfig) -> tuple[pki.Ca, Path, Path]:
    """The CA and the controller's certificate and key files (issued when missing, not covering this
    controller's names, or near their end)."""
    cfg = core_or_config.config if isinstance(core_or_config, Controller) else core_or_config
    d = tls_dir(cfg)
    ca = pki.ensure_ca(d)
    cert_path, key_path = d / "controller.crt", d / "controller.key"
    names = controller_names(cfg)
    if not (cert_path.exists() and key_path.exists() and pki.still_good(ca, cert_path.read_bytes(), names)):
        issued = pki.issue(ca, pki.CONTROLLER_NAME, names)
        pki.write_private(key_path, issued.key_pem)
        pki.write_private(cert_path, issued.cert_pem)
        log.info("issued the controller's certificate %s for %s", cert_path, ", ".join(names))
    return ca, cert_path, key_path


def api_ssl_context(cfg: ControllerConfig) -> ssl.SSLContext | None:
    """The API's server context when ``api_tls`` is on: the operator's certificate, else the CA's."""
    if not cfg.api_tls:
        return None
    if cfg.api_tls_cert and cfg.api_tls_key:
        try:
            return pki.server_context(cfg.api_tls_cert, cfg.api_tls_key)
        except (OSError, ssl.SSLError) as e:
            raise pki.PkiError(f"invalid api_tls_cert/api_tls_key ({cfg.api_tls_cert}, {cfg.api_tls_key}): "
                               f"{e}; give a PEM certificate chain and its unencrypted PEM key") from None
    _, cert, key = ensure_controller_cert(cfg)
    return pki.server_context(cert, key)


class Tls:
    def __init__(self, core: Controller) -> None:
        self.core = core
        self.dir = tls_dir(core.config)
        self.ca, self.cert_path, self.key_path = ensure_controller_cert(core)
        self.agent_ssl: ssl.SSLContext = pki.client_context(ca_pem=self.ca.cert_pem)
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()
        self.events_port: int | None = None

    def server_ssl(self) -> ssl.SSLContext:
        """The controller's own server context (events listener; the API when ``api_tls`` uses the CA)."""
        return pki.server_context(self.cert_path, self.key_path)

    def issue_agent(self, host_uuid: str, names: list[str]) -> pki.Issued:
        return pki.issue(self.ca, f"zstack-py agent {host_uuid}", names)

    async def events_listener(self) -> int:
        """Start the agents' TLS events listener if it does not run; returns its port."""
        async with self._lock:
            if self._runner is not None and self.events_port is not None:
                return self.events_port
            from controller.api.http import error_middleware, handle_healthz
            from controller.compute.events import handle_agent_event

            app = web.Application(middlewares=[error_middleware], client_max_size=EVENTS_BODY_MAX)
            app[CORE] = self.core
            app.router.add_post("/v1/agent/events", handle_agent_event)
            app.router.add_get("/healthz", handle_healthz)
            runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.core.config.header_timeout)
            await runner.setup()
            cfg = self.core.config
            site = web.TCPSite(runner, cfg.listen_host, cfg.agent_tls_port, ssl_context=self.server_ssl())
            try:
                await site.start()
            except OSError as e:
                await runner.cleanup()
                raise OperationError(f"cannot listen for the agents' TLS events channel on "
                                     f"{cfg.listen_host}:{cfg.agent_tls_port}: {e.strerror or e}; free that port "
                                     "or set agent_tls_port in the controller config") from e
            self._runner = runner
            self.events_port = int(runner.addresses[0][1])
            log.info("agents' TLS events channel listening on %s:%d", cfg.listen_host, self.events_port)
            return self.events_port

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        self.events_port = None
        if runner is not None:
            await runner.cleanup()


@on_start(20, "tls")
async def _start(core: Controller) -> None:
    try:
        tls = await asyncio.to_thread(Tls, core)
    except pki.PkiError as e:
        raise OperationError(str(e)) from e
    core.services["tls"] = tls
    if await core.db.fetchone("SELECT 1 FROM Host WHERE agentTls=1 LIMIT 1") is not None:
        try:
            await tls.events_listener()
        except OperationError as e:  # agents queue their reports; the next deploy tries again
            log.error("%s", e.details)
