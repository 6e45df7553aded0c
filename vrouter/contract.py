"""The router agent's contract with the host: the virtio-serial port it listens on, and the host side of that
channel (one HTTP/1.1 request over the unix socket QEMU binds for the port; used by the host agent's relay and
the bench). The only part of ``vrouter`` the host agent imports (DESIGN.md's import direction)."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

#: the virtio-serial port name the agent listens on (libvirt ``<target type='virtio' name=...>``)
CHANNEL_NAME = "org.zstack.vrouter.0"


def package_dir() -> Path:
    """The directory of the ``vrouter`` package this process runs."""
    return Path(__file__).resolve().parent


def code_files(package_dir: Path) -> dict[str, str]:
    """The agent's code: every ``*.py`` of the ``vrouter`` package directory, by file name."""
    return {p.name: p.read_text() for p in sorted(package_dir.glob("*.py"))}


def code_digest(files: dict[str, str]) -> str:
    """What the router agent reports as ``digest`` and the controller compares with its own package's: a
    mismatch makes the controller push its code (``/upgrade``) instead of needing a new router image."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return h.hexdigest()


class ChannelError(Exception):
    """The router did not answer over its channel (not started, agent not up, or timed out)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("vrouter", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def call(sock_path: str, path: str, body: dict[str, Any], token: str | None,
         timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``path`` on the router; (HTTP status, JSON reply)."""
    conn = _UnixConnection(sock_path, timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise ChannelError(f"router channel {sock_path}: {path}: {type(e).__name__}: {e}") from e
    finally:
        conn.close()
    try:
        reply = json.loads(data or b"{}")
    except ValueError as e:
        raise ChannelError(f"router channel {sock_path}: {path}: reply is not JSON: {data[:200]!r}") from e
    return resp.status, reply


def wait_ready(sock_path: str, uuid: str, token: str, timeout: float) -> dict[str, Any]:
    """Init the router (trust on first use over the channel) as soon as its agent answers; its ping reply."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            status, reply = call(sock_path, "/init", {"uuid": uuid, "token": token}, token,
                                 timeout=min(10.0, max(1.0, deadline - time.monotonic())))
            if status == 200:
                return reply
            last = f"HTTP {status}: {reply.get('error')}"
            if status in (400, 403):
                raise ChannelError(f"router {uuid} refused init: {last}")
        except ChannelError as e:
            last = str(e)
        if time.monotonic() > deadline:
            raise ChannelError(f"router {uuid}: agent not ready after {timeout:.0f} s ({last})")
        time.sleep(0.5)
