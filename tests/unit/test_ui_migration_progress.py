"""The web console shows a migrating VM's progress live: the change feed publishes ``event: progress`` (percent,
memory and disk MiB processed/total, in the page's language) whenever the controller's per-VM progress
(``Jobs.items``, fed by the source agent during MigrateVm) changes, and ``done`` when the migration ended; the
VM's page has the element the script fills. Real controller app, aiohttp test client, signed-in session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from test_ui_pages import sign_in

from controller.api.http import CORE
from controller.app import create_app
from controller.config import ControllerConfig
from controller.ui import i18n

VM = "3f0c2a5e9b7d4c1e8a6f0b2d4c6e8a10"
MiB = 1 << 20


@pytest.fixture
async def client(controller_config: ControllerConfig) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(controller_config))) as c:
        yield c


async def _next_progress(r: ClientResponse) -> dict[str, Any]:
    kind = ""
    while True:
        line = (await asyncio.wait_for(r.content.readline(), 10)).decode().strip()
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "progress":
            return dict(json.loads(line[6:]))


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
async def test_migration_progress_is_pushed_to_the_console(client: TestClient, lang: str) -> None:
    await sign_in(client, lang)
    jobs = client.app[CORE].jobs
    t = i18n.translations(lang).gettext
    r = await client.get("/ui/events")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert (await r.content.readline()).decode().startswith(": connected")
    jobs.report(VM, {"vmInstanceUuid": VM, "stage": "migrating", "percent": 45, "memoryTotal": 128 * MiB,
                     "memoryProcessed": 70 * MiB, "diskTotal": 72 * MiB, "diskProcessed": 20 * MiB})
    d = await _next_progress(r)
    assert (d["uuid"], d["percent"], d["memory"], d["disk"], d.get("done")) == (VM, 45, [70, 128], [20, 72], None)
    assert d["label"] == f"{t('Migrating')} 45% · {t('Memory')} 70/128 MiB · {t('Volumes')} 20/72 MiB", d
    jobs.report(VM, {"vmInstanceUuid": VM, "stage": "migrating", "percent": 80, "memoryTotal": 128 * MiB,
                     "memoryProcessed": 120 * MiB})
    d = await _next_progress(r)
    assert d["label"] == f"{t('Migrating')} 80% · {t('Memory')} 120/128 MiB" and "disk" not in d, d
    jobs.forget(VM)
    d = await _next_progress(r)
    assert (d["uuid"], d["done"], d["label"]) == (VM, True, "")
    r.close()
    # the script that fills the VM page's element listens to these events
    js = await (await client.get("/ui/static/ui.js")).text()
    assert 'addEventListener("progress"' in js and "data-vm-progress" in js
