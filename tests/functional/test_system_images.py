"""System images: the router image the installer leaves in ``system_image_dir`` is registered by the controller,
once, as a system image on the first backup storage (controller/backup/system_images.py); the VM wizard does
not offer it. Real SFTP (the in-process asyncssh server of tests/sftp_server.py) and real qemu-img."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apiclient import Api, sign_in
from sftp_server import sftp_servers

from controller.app import create_app
from controller.config import ControllerConfig
from zsutil.runner import run

PASSWORD = "p@ss word"


@pytest.fixture
async def ssh_port() -> AsyncIterator[int]:
    async with sftp_servers(["127.0.0.1"], PASSWORD) as [(_, port)]:
        yield port


def _config(tmp_path: Path) -> ControllerConfig:
    return ControllerConfig(db_path=str(tmp_path / "controller.db"), log_dir=str(tmp_path / "log"),
                            image_import_dirs=[str(tmp_path / "import")],
                            system_image_dir=str(tmp_path / "import" / "system"))


async def _controller(tmp_path: Path) -> AsyncIterator[tuple[TestClient, Api]]:
    async with TestClient(TestServer(create_app(_config(tmp_path)))) as client:
        a = Api(client)
        await a.login()
        yield client, a


async def _until(what: str, fn: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_router_image_is_registered_once_on_the_first_backup_storage(ssh_port: int, tmp_path: Path) -> None:
    system = tmp_path / "import" / "system"
    system.mkdir(parents=True)
    await run(["qemu-img", "create", "-f", "qcow2", str(system / "zstack-vrouter-1.2.3.qcow2"), "64M"], timeout=30)
    (system / "notes.txt").write_text("not an image\n")
    gen = _controller(tmp_path)
    client, api = await gen.__anext__()
    try:
        # no backup storage yet: nothing is registered (and the controller started fine)
        await asyncio.sleep(0.5)
        assert await api.query("QueryImage") == []
        bs = await api.inv("AddSftpBackupStorage", hostname="127.0.0.1", sshPort=ssh_port, username="root",
                           password=PASSWORD, url=str(tmp_path / "bs"), name="bs")

        async def ready() -> list[dict[str, Any]]:
            return [i for i in await api.query("QueryImage") if i["status"] == "Ready"]

        [img] = await _until("the router image to be registered", ready)
        assert (img["name"], img["system"], img["format"], img["mediaType"], img["size"]) == (
            "zstack-vrouter-1.2.3", True, "qcow2", "RootVolumeTemplate", 64 << 20)
        assert img["url"] == (system / "zstack-vrouter-1.2.3.qcow2").resolve().as_uri()
        [ref] = img["backupStorageRefs"]
        assert ref["backupStorageUuid"] == bs["uuid"] and ref["installPath"].startswith(f"{tmp_path}/bs/images/")
        assert await asyncio.to_thread(os.path.isfile, ref["installPath"])
        # a reconnect triggers again: still one image
        await api.call("ReconnectBackupStorage", uuid=bs["uuid"])
        await asyncio.sleep(0.5)
        assert [i["uuid"] for i in await api.query("QueryImage")] == [img["uuid"]]
        # the VM wizard does not offer system images; a user image is offered
        await run(["qemu-img", "create", "-f", "qcow2", str(tmp_path / "import" / "user.qcow2"), "16M"], timeout=30)
        user = await api.inv("AddImage", name="user-image", url=(tmp_path / "import" / "user.qcow2").as_uri(),
                             format="qcow2", backupStorageUuids=[bs["uuid"]])
        await sign_in(client)
        page = await (await client.get("/ui/vms/new")).text()
        assert user["uuid"] in page and img["uuid"] not in page and "zstack-vrouter" not in page
    finally:
        await gen.aclose()
    # a new release's router image (an upgrade) is registered when the controller starts; the old one stays once
    await run(["qemu-img", "create", "-f", "qcow2", str(system / "zstack-vrouter-1.2.4.qcow2"), "64M"], timeout=30)
    gen = _controller(tmp_path)
    client, api = await gen.__anext__()
    try:
        async def both() -> list[str]:
            names = sorted(i["name"] for i in await api.query("QueryImage", ("system", "=", "true"))
                           if i["status"] == "Ready")
            return names if len(names) == 2 else []

        assert await _until("the new router image", both) == ["zstack-vrouter-1.2.3", "zstack-vrouter-1.2.4"]
        assert len(await api.query("QueryImage")) == 3
        assert not any(re.search(PASSWORD, str(i)) for i in await api.query("QueryImage"))
    finally:
        await gen.aclose()
