"""Accounts and sessions: ``LogInByAccount``, ``LogOut``, ``ValidateSession``, ``GetVersion``.

Passwords are stored as SHA-512 hex digests (as 1.0 did). Login accepts the clear password or the digest
1.0 clients send. A session expires ``identity/session.timeout`` seconds after login (not sliding); an
account holds at most ``identity/session.maxConcurrent`` sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.core import Controller, on_start
from controller.errors import AuthenticationFailed, InvalidSession
from controller.tasks import every
from controller.util import iso_in, new_uuid, now_iso
from controller.version import VERSION

log = logging.getLogger(__name__)

ADMIN_UUID = "36c27e8ff05c4780bf6d2fa65700f22e"
_SHA512_HEX = re.compile(r"^[0-9a-fA-F]{128}$")


def sha512(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()


@dataclass(frozen=True)
class SessionInfo:
    uuid: str
    accountUuid: str
    userUuid: str
    expiredDate: str


class Identity:
    def __init__(self, core: Controller) -> None:
        self.core = core
        self._cache: dict[str, SessionInfo] = {}

    async def check_session(self, uuid: str | None, api_name: str) -> SessionInfo:
        """The valid session ``uuid`` or ID.1001 (401)."""
        if not uuid:
            raise InvalidSession(f"session of message[{api_name}] is null; log in with LogInByAccount and "
                                 "send 'Authorization: OAuth <session uuid>'")
        s = self._cache.get(uuid)
        if s is None:
            row = await self.core.db.fetchone("SELECT * FROM Session WHERE uuid=?", (uuid,))
            if row is None:
                raise InvalidSession(f"Session expired: session[uuid:{uuid}] does not exist; log in again")
            s = SessionInfo(row["uuid"], row["accountUuid"], row["userUuid"], row["expiredDate"])
            self._cache[uuid] = s
        if s.expiredDate <= now_iso():
            self._cache.pop(uuid, None)
            raise InvalidSession(f"Session expired: session[uuid:{uuid}] expired at {s.expiredDate}; log in "
                                 "again")
        return s

    async def login(self, account_name: str, password: str) -> dict[str, Any]:
        row = await self.core.db.fetchone("SELECT * FROM Account WHERE name=?", (account_name,))
        digest = password.lower() if _SHA512_HEX.match(password) else sha512(password)
        if row is None or not hmac.compare_digest(row["passwordHash"], digest):
            raise AuthenticationFailed("wrong account name or password")
        gc = self.core.services["configs"]
        limit = gc.get_int("identity", "session.maxConcurrent")
        async with self.core.db.write() as tx:
            live = await tx.fetchone("SELECT COUNT(*) AS n FROM Session WHERE accountUuid=? AND expiredDate>?",
                                     (row["uuid"], now_iso()))
            if live is not None and live["n"] >= limit:
                raise AuthenticationFailed(
                    f"account[{account_name}] already has {live['n']} sessions, the maximum set by global "
                    "config identity/session.maxConcurrent; log out some sessions first")
            inv = {"uuid": new_uuid(), "accountUuid": row["uuid"], "userUuid": row["uuid"],
                   "expiredDate": iso_in(gc.get_int("identity", "session.timeout")), "createDate": now_iso()}
            await tx.insert("Session", inv)
        return inv

    async def logout(self, uuid: str) -> None:
        self._cache.pop(uuid, None)
        async with self.core.db.write() as tx:
            await tx.execute("DELETE FROM Session WHERE uuid=?", (uuid,))

    async def cleanup(self) -> None:
        now = now_iso()
        self._cache = {k: v for k, v in self._cache.items() if v.expiredDate > now}
        async with self.core.db.write() as tx:
            await tx.execute("DELETE FROM Session WHERE expiredDate <= ?", (now,))


@on_start(20, "identity")
async def _bootstrap(core: Controller) -> None:
    ident = Identity(core)
    core.services["identity"] = ident
    async with core.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM Account WHERE uuid=?", (ADMIN_UUID,)) is None:
            if core.config.admin_password == "password":
                log.warning("the admin account is created with the default password 'password': change it")
            now = now_iso()
            await tx.insert("Account", {"uuid": ADMIN_UUID, "name": "admin", "type": "SystemAdmin",
                                        "passwordHash": sha512(core.config.admin_password),
                                        "createDate": now, "lastOpDate": now})
    gc = core.services["configs"]
    core.tasks.start("session-cleanup", lambda: every(
        lambda: gc.get_int("identity", "session.cleanup.interval"), ident.cleanup))


class LogInByAccountMsg(ApiMessage):
    accountName: str = Field(min_length=1)
    password: str = Field(min_length=1, description="clear text or its SHA-512 hex digest")


class LogOutMsg(ApiMessage):
    sessionUuid: Uuid | None = None


class ValidateSessionMsg(ApiMessage):
    sessionUuid: Uuid


class GetVersionMsg(ApiMessage):
    pass


@api("LogInByAccount", LogInByAccountMsg, session=False)
async def log_in_by_account(ctx: ApiContext, msg: LogInByAccountMsg) -> dict[str, Any]:
    """Log in with an account name and password; the reply's inventory.uuid is the session."""
    return {"inventory": await ctx.core.services["identity"].login(msg.accountName, msg.password)}


@api("LogOut", LogOutMsg, session=False)
async def log_out(ctx: ApiContext, msg: LogOutMsg) -> dict[str, Any]:
    """End a session (the given sessionUuid, or the caller's own)."""
    uuid = msg.sessionUuid or ctx.raw_session
    if uuid:
        await ctx.core.services["identity"].logout(uuid)
    return {}


@api("ValidateSession", ValidateSessionMsg, session=False)
async def validate_session(ctx: ApiContext, msg: ValidateSessionMsg) -> dict[str, Any]:
    """Tell whether a session is valid (validSession)."""
    try:
        await ctx.core.services["identity"].check_session(msg.sessionUuid, "ValidateSession")
        return {"validSession": True}
    except InvalidSession:
        return {"validSession": False}


@api("GetVersion", GetVersionMsg, session=False)
async def get_version(ctx: ApiContext, msg: GetVersionMsg) -> dict[str, Any]:
    """The controller's version."""
    return {"version": VERSION}
