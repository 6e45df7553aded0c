"""``UpdateAccount``: change an account's password (and name/description), 1.0's message.

* ``uuid`` defaults to the caller's account. The caller must be that account or a SystemAdmin (only the admin
  account exists until multi-tenancy lands); anything else is 403 ID.1002.
* 1.0 asked for no old password (the session proves who calls), and neither does this.
* Password rules: either the SHA-512 hex digest 1.0 clients send (zstack-cli hashes client side; it cannot be
  checked further), or a clear password of 8 to 255 printable characters, not the account name and not the
  factory default ``password``. The new password must differ from the current one. A refused call writes
  nothing.
* On success every other session of the account ends (a stolen session does not survive a password change);
  the caller's own session stays valid. The reply is the Account inventory (no hash, ever).
* The stored form of a password is computed in ONE place, :func:`stored_password`, and compared in one,
  :func:`matches`: ``controller.passwords`` (salted scrypt over the SHA-512 digest, as identity's bootstrap and
  login use it), run off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from pydantic import Field

from controller import passwords
from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Description, Name, Uuid
from controller.api.registry import api
from controller.errors import InvalidArgument, PermissionDenied
from controller.util import now_iso

_SHA512_HEX = re.compile(r"[0-9a-fA-F]{128}")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
MIN_LENGTH = 8


class UpdateAccountMsg(ApiMessage):
    uuid: Uuid | None = Field(default=None, description="the account; default: the caller's own")
    password: str | None = Field(default=None, max_length=255,
                                 description="the new password, clear text or its SHA-512 hex digest")
    name: Name | None = None
    description: Description | None = None


async def stored_password(password: str) -> str:
    """The Account.passwordHash value for a clear password or a 1.0 client's SHA-512 digest."""
    return await asyncio.to_thread(passwords.hash_password, password)


async def matches(password: str, stored: str) -> bool:
    """Whether ``password`` (clear or digest) is the one ``stored`` (as identity's login compares them)."""
    return await asyncio.to_thread(passwords.verify, stored, password)


def check_password_rules(password: str, account_name: str) -> None:
    """400 SYS.1007 naming the field and the rule a new clear password breaks."""
    if _SHA512_HEX.fullmatch(password):
        return
    if not _PRINTABLE.fullmatch(password):
        raise InvalidArgument("invalid field[password]: the password may contain only printable characters (no "
                              "control characters or line breaks)")
    if len(password) < MIN_LENGTH:
        raise InvalidArgument(f"invalid field[password]: the password has {len(password)} characters; at least "
                              f"{MIN_LENGTH} are required")
    if password == account_name or password == "password":
        raise InvalidArgument("invalid field[password]: the password must not be the account name or the default "
                              "password 'password'")


@api("UpdateAccount", UpdateAccountMsg, queue=lambda m: f"account:{m.uuid or 'self'}")
async def update_account(ctx: ApiContext, msg: UpdateAccountMsg) -> dict[str, Any]:
    """Change an account's password, name or description (the caller's own account by default)."""
    assert ctx.session is not None
    caller = await ctx.require("Account", ctx.session.accountUuid, "session", vo="AccountVO")
    uuid = msg.uuid or caller["uuid"]
    account = await ctx.require("Account", uuid, "uuid", vo="AccountVO")
    if caller["uuid"] != uuid and caller["type"] != "SystemAdmin":
        raise PermissionDenied(f"account[uuid:{caller['uuid']}] cannot update account[uuid:{uuid}]; only the "
                               "account itself or an admin can")
    values: dict[str, Any] = {}
    if msg.password is not None:
        check_password_rules(msg.password, msg.name or account["name"])
        if await matches(msg.password, account["passwordHash"]):
            raise InvalidArgument("invalid field[password]: the new password is the current one; choose another")
        values["passwordHash"] = await stored_password(msg.password)
    if msg.name is not None and msg.name != account["name"]:
        values["name"] = msg.name
    if msg.description is not None:
        values["description"] = msg.description
    if not values:
        return {"inventory": await ctx.inventory("Account", uuid)}
    ended: list[str] = []
    async with ctx.db.write() as tx:
        if "name" in values and await tx.fetchone("SELECT 1 FROM Account WHERE name=? AND uuid<>?",
                                                  (values["name"], uuid)):
            raise InvalidArgument(f"invalid field[name]: an account named {values['name']!r} already exists")
        await tx.update("Account", {"uuid": uuid}, {**values, "lastOpDate": now_iso()})
        if "passwordHash" in values:
            rows = await tx.fetchall("SELECT uuid FROM Session WHERE accountUuid=? AND uuid<>?",
                                     (uuid, ctx.session.uuid))
            ended = [r["uuid"] for r in rows]
    ident = ctx.core.services["identity"]
    for s in ended:
        await ident.logout(s)
    return {"inventory": await ctx.inventory("Account", uuid)}
