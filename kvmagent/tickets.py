"""One-time transfer tickets for host-to-host volume copies (issue 18, security 4).

The controller never hands a host's agent token to another host. For a copy it asks the DESTINATION agent
(with its own token) for a ticket bound to that one copy: the primary storage, the exact files (absolute
path → size in bytes) and a lifetime; it gives only the ticket to the SOURCE. With the ticket the source can:

* ``POST /localstorage/receive`` each listed file once, with exactly its listed size;
* ``POST /localstorage/checkbits`` on listed files of that storage;
* ``POST /localstorage/delete`` of files it sent with this ticket (the undo of a failed copy);

and nothing else (every other endpoint still needs the host token: 401). A ticket expires when unused for
its ``idle`` seconds or after ``max_age`` (whichever first) and is revoked by the controller when the copy
ends. Refusals are :class:`AgentError` 403 ``AGENT.TICKET_REFUSED`` naming what was refused, and logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from kvmagent.contract.base import AgentError

log = logging.getLogger(__name__)
RECEIVE_PATH = "/localstorage/receive"
CHECKBITS_PATH = "/localstorage/checkbits"
DELETE_PATH = "/localstorage/delete"
TICKET_PATHS = frozenset({RECEIVE_PATH, CHECKBITS_PATH, DELETE_PATH})


def _norm(p: str) -> str:
    return os.path.realpath(p)


@dataclass
class Ticket:
    secret: str
    storage_path: str
    files: dict[str, int]
    idle: float
    deadline: float
    last_use: float = field(default_factory=time.monotonic)
    received: set[str] = field(default_factory=set)

    def alive(self, now: float) -> bool:
        return now < self.deadline and now - self.last_use < self.idle


def refused(msg: str) -> AgentError:
    log.warning("transfer ticket refused: %s", msg)
    return AgentError("AGENT.TICKET_REFUSED", f"transfer ticket refused: {msg}", status=403)


class Tickets:
    def __init__(self) -> None:
        self._live: dict[str, Ticket] = {}

    def issue(self, storage_path: str, files: dict[str, int], *, idle: float, max_age: float) -> str:
        now = time.monotonic()
        for k in [k for k, t in self._live.items() if not t.alive(now)]:
            del self._live[k]
        secret = "zst1-" + secrets.token_urlsafe(32)
        self._live[secret] = Ticket(secret, _norm(storage_path), {_norm(p): s for p, s in files.items()}, idle,
                                    now + max_age, now)
        return secret

    def revoke(self, secret: str) -> bool:
        return self._live.pop(secret, None) is not None

    def find(self, secret: str) -> Ticket | None:
        """The live ticket of ``secret`` (constant-time compare), or None."""
        now = time.monotonic()
        for key, t in list(self._live.items()):
            if hmac.compare_digest(key.encode(), secret.encode()):
                if not t.alive(now):
                    del self._live[key]
                    return None
                return t
        return None

    def check_json(self, t: Ticket, path: str, body: Any) -> None:
        """A checkbits/delete body is within the ticket: its storage, its files (delete: files it sent)."""
        if not isinstance(body, dict):
            raise refused(f"{path}: body is not a JSON object")
        if _norm(str(body.get("storagePath", ""))) != t.storage_path:
            raise refused(f"{path}: storagePath {body.get('storagePath')!r} is not the ticket's storage "
                          f"{t.storage_path}")
        paths = body.get("paths")
        if not isinstance(paths, list) or not paths:
            raise refused(f"{path}: paths must be a non-empty list")
        allowed = t.received if path == DELETE_PATH else t.files.keys()
        bad = [p for p in paths if not isinstance(p, str) or _norm(p) not in allowed]
        if bad:
            what = "files sent with this ticket" if path == DELETE_PATH else "files of this copy"
            raise refused(f"{path}: {bad[:3]} are not {what}")
        t.last_use = time.monotonic()

    def check_receive(self, t: Ticket, path: str, size: str | None) -> None:
        """A receive of ``path`` with ``size`` bytes: listed, exact size, not received before."""
        p = _norm(path)
        if p not in t.files:
            raise refused(f"X-Zs-Path {path!r} is not a file of this copy")
        if str(t.files[p]) != (size or "").strip():
            raise refused(f"X-Zs-Size {size!r} of {path} is not the ticket's size {t.files[p]}")
        if p in t.received:
            raise refused(f"{path} was already sent with this ticket (one transfer per file)")
        t.received.add(p)
        t.last_use = time.monotonic()
