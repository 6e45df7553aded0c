"""The list pages' column chooser: labelled checkboxes in a fieldset, the choice applied server-side and
remembered per resource in a cookie; unknown fields ignored, the first (link) column always shown; in the
three languages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_ui_pages import LANGS, seed, sign_in

from controller.app import create_app
from controller.config import ControllerConfig

HEAD = {  # the zone list's column labels per language: Name, State, UUID, Created
    "en": ("Name", "State", "UUID", "Created"),
    "zh_CN": ("名称", "状态", "UUID", "已创建"),
    "zh_TW": ("名稱", "狀態", "UUID", "已建立"),
}
LEGEND = {"en": "Columns to show", "zh_CN": "要显示的列", "zh_TW": "要顯示的欄位"}


@pytest.fixture
async def client(controller_config: ControllerConfig) -> AsyncIterator[TestClient]:
    app = create_app(controller_config)
    async with TestClient(TestServer(app)) as c:
        yield c


def headers(html: str) -> list[str]:
    thead = re.search(r"<thead>(.*?)</thead>", html, re.S).group(1)  # type: ignore[union-attr]
    cells = re.findall(r"<th scope=\"col\"[^>]*>(.*?)</th>", thead, re.S)
    # the first header of a list with bulk actions is the (screen-reader only) "Select" checkbox column
    return [re.sub(r"<[^>]+>|[▲▼]", "", c).strip() for c in cells if '<span class="sr">' not in c]


def checked(html: str) -> dict[str, bool]:
    return {m.group(1): "checked" in m.group(2)
            for m in re.finditer(r'<input type="checkbox" name="cols" value="([^"]+)"([^>]*)>', html)}


@pytest.mark.parametrize("lang", LANGS)
async def test_chosen_columns_are_shown_and_remembered(client: TestClient, lang: str) -> None:
    await seed(client)
    await sign_in(client, lang)
    name, state, uuid, created = HEAD[lang]
    r = await client.get("/ui/r/zones")
    html = await r.text()
    assert headers(html) == [name, state, uuid, created]
    assert f"<legend>{LEGEND[lang]}</legend>" in html
    assert checked(html) == {"name": True, "state": True, "uuid": True, "createDate": True}
    # every checkbox sits inside its own label (accessible name), the form has a real submit button
    assert len(re.findall(r'<label><input type="checkbox" name="cols"', html)) == 4
    assert 'name="colsform" value="1"' in html

    # choose UUID only (plus a field that does not exist, ignored); Name is the link column and always stays
    r = await client.get("/ui/r/zones?colsform=1&cols=uuid&cols=password&state=Enabled&sort=name&dir=asc")
    assert r.status == 200
    html = await r.text()
    assert headers(html) == [name, f"{uuid}"]
    assert checked(html) == {"name": True, "state": False, "uuid": True, "createDate": False}
    assert "zone-1" in html and "Enabled" not in re.search(r"<tbody>(.*?)</tbody>", html, re.S).group(1)  # type: ignore[union-attr]
    # the chooser keeps the current filters and sort
    assert '<input type="hidden" name="state" value="Enabled">' in html
    assert '<input type="hidden" name="sort" value="name">' in html
    cookie = next(c for c in r.headers.getall("Set-Cookie") if c.startswith("zs_cols_zones="))
    assert cookie.startswith("zs_cols_zones=name.uuid;")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie

    # remembered: the plain list and the htmx partial show the same columns; other lists are not affected
    assert headers(await (await client.get("/ui/r/zones")).text()) == [name, uuid]
    r = await client.get("/ui/r/zones?sort=uuid", headers={"HX-Request": "true", "HX-Target": "list"})
    assert headers(await r.text()) == [name, uuid]
    assert state in headers(await (await client.get("/ui/r/clusters")).text())

    # choosing nothing leaves the link column; choosing all again brings every column back
    r = await client.get("/ui/r/zones?colsform=1")
    assert headers(await r.text()) == [name]
    r = await client.get("/ui/r/zones?colsform=1&cols=state&cols=uuid&cols=createDate")
    assert headers(await r.text()) == [name, state, uuid, created]
    assert headers(await (await client.get("/ui/r/zones")).text()) == [name, state, uuid, created]


async def test_a_forged_cookie_shows_only_known_columns(client: TestClient) -> None:
    await sign_in(client)
    client.session.cookie_jar.update_cookies({"zs_cols_zones": "state.<script>.nothing"})
    r = await client.get("/ui/r/zones")
    html = await r.text()
    assert r.status == 200 and headers(html) == ["Name", "State"]
    assert "<script>.nothing" not in html
