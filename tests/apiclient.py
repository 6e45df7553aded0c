"""A small client for controller API tests in every tier (``tests/`` is on ``sys.path``): the unit tier's
``api`` fixture, functional test_backup_storage, and the contract tier's ``Env`` (a subclass); ``sign_in`` signs
in to the web console."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient


class Api:
    """Calls ``POST /v1/{name}`` with the admin session; ``call`` asserts success, ``raw`` does not."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.session: str | None = None

    async def raw(self, name: str, /, *, session: bool = True, **params: Any) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"OAuth {self.session}"} if session and self.session else {}
        r = await self.client.post(f"/v1/{name}", json=params, headers=headers)
        return r.status, await r.json()

    async def call(self, name: str, /, **params: Any) -> dict[str, Any]:
        status, body = await self.raw(name, **params)
        assert status == 200 and body["success"], f"{name} failed: {status} {body}"
        return body

    async def inv(self, name: str, /, **params: Any) -> dict[str, Any]:
        """``call`` and return the answer's inventory."""
        return dict((await self.call(name, **params))["inventory"])

    async def login(self) -> None:
        body = await self.call("LogInByAccount", session=False, accountName="admin", password="password")
        self.session = body["inventory"]["uuid"]

    async def query(self, name: str, /, *conds: tuple[str, str, Any], **params: Any) -> list[dict[str, Any]]:
        conditions = [{"name": n, "op": op, "value": v} for n, op, v in conds]
        return (await self.call(name, conditions=conditions, **params))["inventories"]


async def sign_in(client: TestClient, lang: str = "en") -> str:
    client.session.cookie_jar.update_cookies({"zs_lang": lang})
    r = await client.get("/ui/login")
    assert r.status == 200
    token = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
    r = await client.post("/ui/login", data={"csrf": token, "account": "admin", "password": "password",
                                             "next": "/ui/"}, allow_redirects=False)
    assert r.status == 303, await r.text()
    cookie = r.headers.getall("Set-Cookie")
    sess = next(c for c in cookie if c.startswith("zs_session="))
    assert "HttpOnly" in sess and "SameSite=Strict" in sess and "Max-Age=" in sess
    r = await client.get("/ui/")
    assert r.status == 200
    return re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
