"""UpdateAccount: the admin changes its own password (1.0's message; password rules; other sessions end)."""

from __future__ import annotations

import hashlib
from typing import Any

from test_api_support import _core

from controller.identity import ADMIN_UUID


async def _login(api: Any, password: str) -> tuple[int, dict[str, Any]]:
    return await api.raw("LogInByAccount", session=False, accountName="admin", password=password)


async def _refused(api: Any, status: int, code: str, /, *needles: str, **kw: Any) -> None:
    before = dict(await _core(api).db.fetchone("SELECT * FROM Account WHERE uuid=?", (ADMIN_UUID,)))
    got, body = await api.raw("UpdateAccount", **kw)
    assert got == status and body["error"]["code"] == code, body
    for n in needles:
        assert n in body["error"]["details"], (n, body)
    after = dict(await _core(api).db.fetchone("SELECT * FROM Account WHERE uuid=?", (ADMIN_UUID,)))
    assert after == before


async def test_admin_changes_its_password(api: Any) -> None:
    other = (await _login(api, "password"))[1]["inventory"]["uuid"]     # a second session of admin
    inv = (await api.call("UpdateAccount", password="n3w-Secret"))["inventory"]
    assert inv["uuid"] == ADMIN_UUID and inv["name"] == "admin"
    assert "passwordHash" not in inv and "password" not in inv
    assert (await _login(api, "password"))[0] == 401
    assert (await _login(api, "n3w-Secret"))[0] == 200
    # 1.0 clients send the SHA-512 digest of the clear password: accepted at login
    assert (await _login(api, hashlib.sha512(b"n3w-Secret").hexdigest()))[0] == 200
    # the other session ended; the caller's own stays valid
    assert (await api.call("ValidateSession", session=False, sessionUuid=other))["validSession"] is False
    assert (await api.call("ValidateSession", session=False, sessionUuid=api.session))["validSession"] is True
    stored = await _core(api).db.fetchone("SELECT passwordHash FROM Account WHERE uuid=?", (ADMIN_UUID,))
    assert "n3w-Secret" not in stored["passwordHash"]
    # a 1.0 client (zstack-cli) sends a digest as the new password; explicit uuid, description
    digest = hashlib.sha512(b"third one!").hexdigest()
    inv = (await api.call("UpdateAccount", uuid=ADMIN_UUID, password=digest, description="ops"))["inventory"]
    assert inv["description"] == "ops"
    assert (await _login(api, "third one!"))[0] == 200


async def test_password_rules_change_nothing(api: Any) -> None:
    await _refused(api, 400, "SYS.1007", "field[password]", "5 characters", "at least 8", password="short")
    await _refused(api, 400, "SYS.1007", "field[password]", "printable", password="two\nlines-here")
    await _refused(api, 400, "SYS.1007", "field[password]", "default password", password="password")
    await _refused(api, 400, "SYS.1007", "field[password]", "current one", password=hashlib.sha512(
        b"password").hexdigest())
    await _refused(api, 400, "SYS.1007", "password", password="x" * 256)
    await _refused(api, 404, "SYS.1003", "invalid field[uuid]", "5" * 32, uuid="5" * 32, password="long-enough")
    await _refused(api, 400, "SYS.1007", "uuid", uuid="admin", password="long-enough")
    got, body = await api.raw("UpdateAccount", session=False, password="long-enough")
    assert got == 401 and body["error"]["code"] == "ID.1001"
    assert (await _login(api, "password"))[0] == 200
