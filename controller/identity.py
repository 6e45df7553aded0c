"""Accounts and sessions: ``LogInByAccount``, ``LogOut``, ``ValidateSession``, ``GetVersion``.

Passwords are stored as salted scrypt hashes of the SHA-512 hex digest 1.0 clients send
(:mod:`controller.passwords`); login accepts the clear password or that digest, never the stored hash.
Failed logins are counted per account and per source address: past ``identity/login.maxFailures`` (or
``login.maxFailuresPerSource``) within ``identity/login.failureWindow`` seconds, logins answer 429 (ID.1004)
and an audit line is logged (never the password). ``LogOut`` needs a session and ends only that one.
A session expires ``identity/session.timeout`` seconds after login (not sliding); an
account holds at most ``identity/session.maxConcurrent`` sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.core import Controller, on_start
from controller.errors import AuthenticationFailed, InvalidSession, PermissionDenied, TooManyLoginFailures
from controller.globalconfig import ConfigDef, register_config
from controller.passwords import hash_password, verify
from controller.util import iso_in, new_uuid, now_iso
from controller.version import PROTOCOL_LEVEL, VERSION
from zsutil.tasks import every

log = logging.getLogger(__name__)
audit = logging.getLogger("zstack.audit")

ADMIN_UUID = "36c27e8ff05c4780bf6d2fa65700f22e"
#: compared against when the account does not exist, so both cases cost one scrypt
_DUMMY_HASH = hash_password("no such account")

register_config(ConfigDef("identity", "login.maxFailures", "5", int, min=1,
                          description="Failed logins of one account within login.failureWindow before its "
                          "logins answer 429."))
register_config(ConfigDef("identity", "login.maxFailuresPerSource", "20", int, min=1,
                          description="Failed logins from one address within login.failureWindow before its "
                          "logins answer 429."))
register_config(ConfigDef("identity", "login.failureWindow", "300", int, min=1,
                          description="Seconds a failed login counts against its account and address."))


@dataclass(frozen=True)
class SessionInfo:
    uuid: str
    accountUuid: str
    userUuid: str
    expiredDate: str


class LoginThrottle:
    """Failed-login times per key (``account:<name>``, ``source:<address>``), forgotten after the window."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str, window: float, now: float) -> int:
        q = self._fails.get(key)
        if q is None:
            return 0
        while q and q[0] <= now - window:
            q.popleft()
        if not q:
            del self._fails[key]
            return 0
        return len(q)

    def blocked(self, limits: dict[str, int], window: float) -> str | None:
        """The first key whose recent failures reached its limit, or None."""
        now = time.monotonic()
        for key, limit in limits.items():
            if self._recent(key, window, now) >= limit:
                return key
        return None

    def fail(self, keys: list[str], window: float) -> None:
        now = time.monotonic()
        if len(self._fails) >= self.MAX_KEYS:  # bounded memory: drop what has expired, then the oldest keys
            for k in list(self._fails):
                self._recent(k, window, now)
            while len(self._fails) >= self.MAX_KEYS:
                del self._fails[next(iter(self._fails))]
        for key in keys:
            self._fails.setdefault(key, deque(maxlen=1000)).append(now)

    def undo(self, keys: list[str]) -> None:
        """Take back the attempt ``fail`` counted in advance (the login succeeded)."""
        for key in keys:
            q = self._fails.get(key)
            if q:
                q.pop()
                if not q:
                    del self._fails[key]


class Identity:
    def __init__(self, core: Controller) -> None:
        self.core = core
        self._cache: dict[str, SessionInfo] = {}
        self.throttle = LoginThrottle()

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

    async def login(self, account_name: str, password: str, source: str | None = None) -> dict[str, Any]:
        gc = self.core.services["configs"]
        window = gc.get_int("identity", "login.failureWindow")
        keys = {f"account:{account_name}": gc.get_int("identity", "login.maxFailures")}
        if source:
            keys[f"source:{source}"] = gc.get_int("identity", "login.maxFailuresPerSource")
        blocked = self.throttle.blocked(keys, window)
        if blocked is not None:
            what = blocked.partition(":")[2]
            audit.warning("login refused (throttled): account=%r source=%s after too many failures of %s",
                          account_name, source, blocked)
            kind, setting = (("account", "login.maxFailures") if blocked.startswith("account:")
                             else ("address", "login.maxFailuresPerSource"))
            raise TooManyLoginFailures(
                f"too many failed logins for {kind} {what!r} within identity/login.failureWindow "
                f"({window} s; limit identity/{setting}); wait and try again")
        # Counted as a failure in advance (and taken back on success), so concurrent guesses are throttled too.
        self.throttle.fail(list(keys), window)
        row = await self.core.db.fetchone("SELECT * FROM Account WHERE name=?", (account_name,))
        ok = await asyncio.to_thread(verify, row["passwordHash"] if row is not None else _DUMMY_HASH, password)
        if row is None or not ok:
            audit.warning("login failed: account=%r source=%s", account_name, source)
            raise AuthenticationFailed("wrong account name or password")
        self.throttle.undo(list(keys))
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
                                        "passwordHash": await asyncio.to_thread(
                                            hash_password, core.config.admin_password),
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
    return {"inventory": await ctx.core.services["identity"].login(msg.accountName, msg.password, ctx.source)}


@api("LogOut", LogOutMsg)
async def log_out(ctx: ApiContext, msg: LogOutMsg) -> dict[str, Any]:
    """End the caller's own session (sessionUuid, if given, must be that session)."""
    assert ctx.session is not None
    if msg.sessionUuid is not None and msg.sessionUuid != ctx.session.uuid:
        raise PermissionDenied(f"LogOut ends only the caller's own session; sessionUuid[{msg.sessionUuid}] is "
                               "not the session this call is made with")
    await ctx.core.services["identity"].logout(ctx.session.uuid)
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
    """The controller's release (``version``), its database schema version (the newest migration it ships,
    ``schemaVersion``) and the agent protocol level it speaks (``agentProtocol``)."""
    return {"version": VERSION, "schemaVersion": ctx.core.db.schema_version, "agentProtocol": PROTOCOL_LEVEL}
