"""The SPICE ``.vv`` download: the file's content (control characters cannot add keys), and the endpoint's
refusals: no session → sign-in, a VM the session cannot see → 404, in the three languages. (The download of a
Running SPICE VM needs a KVM agent: not covered by a unit test.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_ui_pages import LANGS, sign_in

from controller.app import create_app
from controller.config import ControllerConfig
from controller.ui.spice import vv_file

NOT_FOUND = {"en": "does not exist", "zh_CN": "云主机", "zh_TW": "虛擬機器"}


@pytest.fixture
async def client(controller_config: ControllerConfig) -> AsyncIterator[TestClient]:
    app = create_app(controller_config)
    async with TestClient(TestServer(app)) as c:
        yield c


def test_vv_file_has_the_virt_viewer_keys_and_no_injected_lines() -> None:
    text = vv_file(host="192.168.0.5", port=5901, password="s3cret", title="web\nhost=evil.example\r\nport=1")
    lines = text.splitlines()
    assert lines[0] == "[virt-viewer]"
    keys = dict(line.split("=", 1) for line in lines[1:])
    assert keys == {"type": "spice", "host": "192.168.0.5", "port": "5901", "password": "s3cret",
                    "title": "webhost=evil.exampleport=1", "delete-this-file": "1"}
    assert "password" not in vv_file(host="h", port=1, password=None, title="t")


async def test_vv_needs_a_session(client: TestClient) -> None:
    r = await client.get("/ui/vms/" + "a" * 32 + "/console.vv", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/ui/login?next=")


@pytest.mark.parametrize("lang", LANGS)
async def test_vv_of_an_unknown_vm_is_404(client: TestClient, lang: str) -> None:
    await sign_in(client, lang)
    r = await client.get("/ui/vms/" + "a" * 32 + "/console.vv")
    text = await r.text()
    assert r.status == 404 and "Content-Disposition" not in r.headers
    assert NOT_FOUND[lang] in text and "a" * 32 in text
