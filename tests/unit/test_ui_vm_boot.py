"""A VM's detail page: its boot order shown and set through GetVmBootOrder/SetVmBootOrder (bad values refused
naming the field, the value and what is allowed, nothing changed), and the SPICE .vv download refused for a VM
that is not Running (the API's state check), in the three languages."""

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

TITLE = {"en": "Boot order", "zh_CN": "启动顺序", "zh_TW": "開機順序"}


@pytest.fixture
async def client(controller_config: ControllerConfig) -> AsyncIterator[TestClient]:
    app = create_app(controller_config)
    async with TestClient(TestServer(app)) as c:
        yield c


async def stopped_vm(client: TestClient) -> str:
    """A Stopped VM row (no host needed: boot order is a system tag read at the next start)."""
    vm = new_uuid()
    async with client.app[CORE].db.write() as tx:
        await tx.insert("VmInstance", {"uuid": vm, "name": "boot-vm", "internalId": 4242, "memorySize": 1,
                                       "cpuNum": 1, "cpuSpeed": 1, "hostUuid": None, "state": "Stopped",
                                       "createDate": now_iso(), "lastOpDate": now_iso()})
    return vm


@pytest.mark.parametrize("lang", LANGS)
async def test_boot_order_shown_and_set(client: TestClient, lang: str) -> None:
    a = Api(client)
    await a.login()
    vm = await stopped_vm(client)
    csrf = await sign_in(client, lang)
    r = await client.get(f"/ui/r/vms/{vm}")
    text = await r.text()
    assert r.status == 200 and f'<h2 id="boot-h">{TITLE[lang]}</h2>' in text
    assert '<option value="HardDisk" selected>' in text
    r = await client.post(f"/ui/vms/{vm}/boot-order", data={"csrf": csrf, "order": "CdRom,HardDisk"},
                          allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == f"/ui/r/vms/{vm}"
    assert (await a.call("GetVmBootOrder", uuid=vm))["order"] == ["CdRom", "HardDisk"]
    text = await (await client.get(f"/ui/r/vms/{vm}")).text()
    assert '<option value="CdRom,HardDisk" selected>' in text
    # a value not offered: 400 naming field, value and the choices; nothing changed
    r = await client.post(f"/ui/vms/{vm}/boot-order", data={"csrf": csrf, "order": "Network"})
    text = await r.text()
    assert r.status == 400 and TITLE[lang] in text and "Network" in text and "HardDisk, HardDisk,CdRom" in text
    assert (await a.call("GetVmBootOrder", uuid=vm))["order"] == ["CdRom", "HardDisk"]
    # without the CSRF token: refused
    r = await client.post(f"/ui/vms/{vm}/boot-order", data={"order": "CdRom"})
    assert r.status == 403
    assert (await a.call("GetVmBootOrder", uuid=vm))["order"] == ["CdRom", "HardDisk"]


async def test_vv_of_a_stopped_vm_is_refused(client: TestClient) -> None:
    vm = await stopped_vm(client)
    await sign_in(client)
    r = await client.get(f"/ui/vms/{vm}/console.vv")
    text = await r.text()
    assert r.status >= 400 and "Content-Disposition" not in r.headers
    assert "Stopped" in text and "[virt-viewer]" not in text


SNAP_TITLE = {"en": "Volume snapshots", "zh_CN": "云盘快照", "zh_TW": "磁碟區快照"}


@pytest.mark.parametrize("lang", LANGS)
async def test_vm_page_lists_its_volume_snapshots(client: TestClient, lang: str) -> None:
    vm = await stopped_vm(client)
    vol, snap, other = new_uuid(), new_uuid(), new_uuid()
    now = now_iso()
    async with client.app[CORE].db.write() as tx:
        await tx.insert("Volume", {"uuid": vol, "name": "root-of-boot-vm", "vmInstanceUuid": vm, "type": "Root",
                                   "deviceId": 0, "status": "Ready", "createDate": now, "lastOpDate": now})
        await tx.insert("Volume", {"uuid": other, "name": "someone-else", "type": "Data", "status": "Ready",
                                   "createDate": now, "lastOpDate": now})
        await tx.insert("VolumeSnapshot", {"uuid": snap, "name": "before-upgrade", "volumeUuid": vol,
                                           "status": "Ready", "createDate": now, "lastOpDate": now})
        await tx.insert("VolumeSnapshot", {"uuid": new_uuid(), "name": "not-this-vm", "volumeUuid": other,
                                           "status": "Ready", "createDate": now, "lastOpDate": now})
    csrf = await sign_in(client, lang)
    text = await (await client.get(f"/ui/r/vms/{vm}")).text()
    assert f'<h2 id="snap-h">{SNAP_TITLE[lang]}</h2>' in text
    assert f'<a href="/ui/r/snapshots/{snap}">before-upgrade</a>' in text and "not-this-vm" not in text
    assert f'action="/ui/r/snapshots/{snap}/act/revert"' in text
    assert f'action="/ui/r/snapshots/{snap}/act/delete"' in text
    assert f'action="/ui/r/volumes/{vol}/act/snapshot"' in text
    # revert is destructive: the form leads to the confirmation page with the CLI line, nothing is run yet
    r = await client.post(f"/ui/r/snapshots/{snap}/act/revert", data={"csrf": csrf})
    text = await r.text()
    assert r.status == 200 and f"zstack-cli RevertVolumeFromSnapshot uuid={snap}" in text
