"""An agent's TLS material, shipped over the deploy's SSH connection (issue 18, security 10).

At every deploy (AddKvmHost, ReconnectHost, auto-reconnect redeploys) :func:`ensure_agent_cert` looks at
what the host has in :data:`TLS_DIR`: the certificate is kept when it was issued by this controller's CA,
names the host's management IP (and the address the agent listens on) and has more than
``pki.RENEW_BEFORE`` left; otherwise a new key and certificate are made and written (directory 0700, files
0600, through a temporary file renamed into place), with the CA certificate the agent uses to verify the
controller. The key travels only inside the SSH channel's stdin: never in a command line, a log or the
database.
"""

from __future__ import annotations

import logging
import shlex
from typing import Any
from urllib.parse import urlparse

import asyncssh

from controller import pki
from controller.core import Controller
from controller.errors import OperationError

log = logging.getLogger(__name__)

TLS_DIR = "/etc/zstack-py/tls"
CERT = f"{TLS_DIR}/agent.crt"
KEY = f"{TLS_DIR}/agent.key"
CA = f"{TLS_DIR}/ca.crt"


async def _run(conn: asyncssh.SSHClientConnection, cmd: str, stdin: str | None = None) -> tuple[int, str]:
    r = await conn.run(cmd, check=False, input=stdin)
    return int(r.exit_status or 0), str(r.stdout)


async def _write(conn: asyncssh.SSHClientConnection, path: str, data: bytes) -> None:
    tmp = shlex.quote(path + ".tmp")
    rc, _ = await _run(conn, f"umask 077 && mkdir -p {TLS_DIR} && chmod 700 {TLS_DIR} && cat > {tmp} && "
                             f"chmod 600 {tmp} && mv -f {tmp} {shlex.quote(path)}", stdin=data.decode())
    if rc != 0:
        raise OperationError(f"cannot write {path} on the host (rc={rc})")


async def ensure_agent_cert(core: Controller, conn: asyncssh.SSHClientConnection, host: dict[str, Any],
                            listen_ip: str) -> bool:
    """Make sure the host holds a good certificate and key for its agent and the CA; True when anything
    was written (the agent must restart to load it)."""
    tls = core.services["tls"]
    names = list(dict.fromkeys([str(host["managementIp"]), listen_ip]))
    ca_pem = tls.ca.cert_pem
    rc, have_ca = await _run(conn, f"cat {CA}")
    rc2, have_cert = await _run(conn, f"cat {CERT}")
    rc3, _ = await _run(conn, f"test -s {KEY}")
    if (rc == 0 and rc2 == 0 and rc3 == 0 and have_ca.encode() == ca_pem
            and pki.still_good(tls.ca, have_cert.encode(), names)):
        return False
    issued = tls.issue_agent(str(host["uuid"]), names)
    await _write(conn, KEY, issued.key_pem)
    await _write(conn, CERT, issued.cert_pem)
    await _write(conn, CA, ca_pem)
    log.info("issued a TLS certificate for the agent of host %s (%s)", host["uuid"], ", ".join(names))
    return True


async def events_url(core: Controller, local_ip: str) -> str:
    """The https URL of the controller's events listener as the host reaches it (started if needed)."""
    port = await core.services["tls"].events_listener()
    public = core.config.public_url
    address = (urlparse(public).hostname if public else None) or local_ip
    hostpart = f"[{address}]" if ":" in address else address
    return f"https://{hostpart}:{port}"
