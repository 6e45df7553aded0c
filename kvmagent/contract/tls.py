"""TLS contexts shared by the agent and the controller (issue 18, security 10).

The controller's CA signs every agent's certificate and the controller's own. Both sides trust ONLY that CA
(never the system's CAs): a certificate from any public CA is refused, which pins the deployment's CA.
Agents check the controller's certificate against :data:`CONTROLLER_NAME`, a DNS name only the controller's
certificate carries (agents' certificates have IP SANs only), so one host's certificate cannot stand in for
the controller; the controller checks an agent's certificate against the host's management IP.
"""

from __future__ import annotations

import ssl
from pathlib import Path

#: the DNS name in the controller's certificate that agents check (never in an agent's certificate)
CONTROLLER_NAME = "zstack-py-controller"


def client_context(ca_file: Path | str | None = None, *, ca_pem: bytes | None = None) -> ssl.SSLContext:
    """A client context that trusts ONLY this CA (no system CAs), checks the peer's name, TLS 1.2+."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem is not None:
        ctx.load_verify_locations(cadata=ca_pem.decode())
    else:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def server_context(cert_file: Path | str, key_file: Path | str) -> ssl.SSLContext:
    """A server context for ``cert_file``/``key_file`` (PEM), TLS 1.2+."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def peer_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """The agent's client context for the controller and other agents: only the controller's CA (None when
    the agent was given no CA: https peers are then checked against the system's CAs)."""
    return client_context(ca_file) if ca_file is not None else None
