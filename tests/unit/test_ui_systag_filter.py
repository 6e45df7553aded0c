"""List pages filter on system tags (``__systemTag__`` through the query engine) as well as user tags; the
filter field is labelled in the three languages and kept by the column chooser."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apiclient import Api
from test_ui_pages import LANGS, sign_in

from controller.api.http import CORE
from controller.app import create_app
from controller.config import ControllerConfig
from controller.util import new_uuid, now_iso

LABEL = {"en": "System tag", "zh_CN": "系统标签", "zh_TW": "系統標籤"}


@pytest.fixture
async def client(controller_config: ControllerConfig) -> AsyncIterator[TestClient]:
    app = create_app(controller_config)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize("lang", LANGS)
async def test_system_tag_filter(client: TestClient, lang: str) -> None:
    a = Api(client)
    await a.login()
    zones = [await a.inv("CreateZone", name=f"systag-{i}") for i in range(2)]
    await a.inv("CreateUserTag", resourceType="ZoneVO", resourceUuid=zones[1]["uuid"], tag="rack::7")
    # a system tag as the controller itself records them (inherent tags are written by services, not the API)
    now = now_iso()
    async with client.app[CORE].db.write() as tx:
        await tx.insert("SystemTag", {"uuid": new_uuid(), "resourceUuid": zones[0]["uuid"], "resourceType": "ZoneVO",
                                      "tag": "rack::7", "type": "System", "inherent": 1, "createDate": now,
                                      "lastOpDate": now})
    await sign_in(client, lang)
    r = await client.get("/ui/r/zones")
    text = await r.text()
    assert f'<label>{LABEL[lang]} <input type="search" name="stag" value="">' in text
    assert "systag-0" in text and "systag-1" in text
    r = await client.get("/ui/r/zones?stag=rack::7")
    text = await r.text()
    assert r.status == 200 and "systag-0" in text and "systag-1" not in text
    assert '<input type="hidden" name="stag" value="rack::7">' in text  # the column chooser keeps it
    r = await client.get("/ui/r/zones?tag=rack::7")  # the user tag filter finds the other one
    text = await r.text()
    assert "systag-1" in text and "systag-0" not in text
    r = await client.get("/ui/r/zones?stag=rack::8")
    text = await r.text()
    assert "systag-0" not in text and "systag-1" not in text
