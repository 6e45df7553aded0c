"""SFTP backup storage and AddImage against a real SSH server: an in-process asyncssh server on loopback
(tests/sftp_server.py) that serves SFTP and runs exec requests (``qemu-img info``) with the local shell, so
the whole data path (connect, download over SFTP, remote inspection, delete) is real. Images are made with
real qemu-img."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from apiclient import Api
from sftp_server import sftp_servers

from controller.api.http import CORE
from controller.app import create_app
from controller.backup.cache import cache_source
from controller.config import ControllerConfig
from storage import fetch
from zsutil.runner import run

PASSWORD = "p@ss word"


@pytest.fixture
async def ssh_port() -> AsyncIterator[int]:
    async with sftp_servers(["127.0.0.1"], PASSWORD) as [(_, port)]:
        yield port


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    cfg = ControllerConfig(db_path=str(tmp_path / "controller.db"), log_dir=str(tmp_path / "log"),
                          image_import_dirs=[str(tmp_path)], image_url_allowed_networks=["127.0.0.1/32"])
    async with TestClient(TestServer(create_app(cfg))) as client:
        a = Api(client)
        await a.login()
        yield a


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A loopback HTTP server for ``tmp_path/www``; ``/slow/<name>`` sends 64 KiB every 50 ms."""
    root = tmp_path / "www"
    root.mkdir()

    async def slow(request: web.Request) -> web.StreamResponse:
        data = (root / request.match_info["name"]).read_bytes()
        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        for i in range(0, len(data), 1 << 16):
            await resp.write(data[i:i + (1 << 16)])
            await asyncio.sleep(0.05)
        return resp

    app = web.Application()
    app.router.add_get("/slow/{name}", slow)
    app.router.add_static("/", root)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", root
    await runner.cleanup()


async def _bs(api: Api, port: int, url: Path) -> dict[str, Any]:
    return (await api.call("AddSftpBackupStorage", hostname="127.0.0.1", sshPort=port, username="root",
                           password=PASSWORD, url=str(url), name="bs"))["inventory"]


async def test_add_sftp_backup_storage(api: Api, ssh_port: int, tmp_path: Path) -> None:
    bs = await _bs(api, ssh_port, tmp_path / "bs" / "deep")
    assert (tmp_path / "bs" / "deep").is_dir()
    assert bs["status"] == "Connected" and 0 < bs["availableCapacity"] <= bs["totalCapacity"]
    assert "password" not in bs and PASSWORD not in str(await api.query("QueryBackupStorage"))
    s, b = await api.raw("AddSftpBackupStorage", hostname="127.0.0.1", sshPort=ssh_port, username="root",
                         password=PASSWORD, url="/x", name="dup")
    assert s == 400 and "existing" in b["error"]["details"], b
    bs2 = (await api.call("ReconnectBackupStorage", uuid=bs["uuid"]))["inventory"]
    assert bs2["status"] == "Connected"


@pytest.mark.parametrize("password,port_delta,word", [("Xy-9secret", 0, "wrong username or password"),
                                                      (PASSWORD, 1, "cannot connect")])
async def test_add_sftp_backup_storage_failure_writes_nothing(api: Api, ssh_port: int, tmp_path: Path,
                                                               password: str, port_delta: int, word: str) -> None:
    port = ssh_port if port_delta == 0 else _free_port()
    s, b = await api.raw("AddSftpBackupStorage", hostname="127.0.0.1", sshPort=port, username="root",
                         password=password, url=str(tmp_path / "bs"), name="bs")
    assert s == 409 and word in b["error"]["details"] and password not in b["error"]["details"], b
    assert await api.query("QueryBackupStorage") == []
    assert not (tmp_path / "bs").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _qcow2(path: Path, size: str = "64M", fill_mib: int = 4) -> None:
    await run(["qemu-img", "create", "-f", "qcow2", str(path), size], timeout=30)
    if fill_mib:
        await run(["qemu-io", "-c", f"write -P 0x5a 0 {fill_mib}M", str(path)], timeout=60)


async def test_add_image_over_http_with_progress(api: Api, ssh_port: int, tmp_path: Path,
                                                 http: tuple[str, Path]) -> None:
    base, www = http
    await _qcow2(www / "t.qcow2", fill_mib=8)
    data = (www / "t.qcow2").read_bytes()
    bs = await _bs(api, ssh_port, tmp_path / "bs")
    task = asyncio.create_task(api.call("AddImage", name="t", url=f"{base}/slow/t.qcow2", format="qcow2",
                                        backupStorageUuids=[bs["uuid"]]))
    seen: set[tuple[str, int | None]] = set()
    while not task.done():
        for img in await api.query("QueryImage"):
            seen.add((img["status"], img["downloadProgress"]))
        await asyncio.sleep(0.2)
    img = (await task)["inventory"]
    assert any(st == "Downloading" and p is not None and 0 < p < 100 for st, p in seen), seen
    assert (img["status"], img["size"], img["actualSize"]) == ("Ready", 64 << 20, len(data))
    assert img["md5Sum"] == hashlib.md5(data).hexdigest()
    [ref] = img["backupStorageRefs"]
    path = tmp_path / "bs" / "images" / img["uuid"] / f"{img['uuid']}.qcow2"
    assert (ref["status"], ref["installPath"]) == ("Ready", str(path))
    assert path.read_bytes() == data
    await api.call("DeleteImage", uuid=img["uuid"])
    await api.call("ExpungeImage", imageUuid=img["uuid"])  # image/deletionPolicy defaults to Delay (§3.10)
    assert not path.parent.exists() and await api.query("QueryImage") == []


async def test_add_image_file_url_and_iso(api: Api, ssh_port: int, tmp_path: Path) -> None:
    bs = await _bs(api, ssh_port, tmp_path / "bs")
    iso = tmp_path / "x.iso"
    with open(iso, "wb") as f:  # noqa: ASYNC230
        f.truncate(1 << 20)
        f.seek(0x8001)
        f.write(b"CD001")
    img = (await api.call("AddImage", name="iso", url=f"file://{iso}", format="raw", mediaType="ISO"))["inventory"]
    assert (img["format"], img["status"], img["size"]) == ("iso", "Ready", 1 << 20)
    assert img["backupStorageRefs"][0]["backupStorageUuid"] == bs["uuid"]


@pytest.mark.parametrize("backing,word", [("/etc/passwd", "/etc/passwd"),
                                          ('json:{"driver":"raw","file":{"driver":"file","filename":"/etc/shadow"}}',
                                           "json:")])
async def test_add_unsafe_image_is_rejected(api: Api, ssh_port: int, tmp_path: Path, http: tuple[str, Path],
                                            backing: str, word: str) -> None:
    base, www = http
    await _qcow2(www / "evil.qcow2", "1M", fill_mib=0)
    await run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", backing, str(www / "evil.qcow2")],
              timeout=30)
    bs = await _bs(api, ssh_port, tmp_path / "bs")
    s, b = await api.raw("AddImage", name="evil", url=f"{base}/evil.qcow2", format="qcow2",
                         backupStorageUuids=[bs["uuid"]])
    assert s == 400 and word in b["error"]["details"] and "backing-filename" in b["error"]["details"], b
    assert await api.query("QueryImage") == []
    assert list((tmp_path / "bs" / "images").iterdir()) == []
    assert (await api.query("QueryBackupStorage"))[0]["availableCapacity"] > 0


async def test_add_image_bad_input_writes_nothing(api: Api, ssh_port: int, tmp_path: Path,
                                                  http: tuple[str, Path]) -> None:
    base, www = http
    await _qcow2(www / "t.qcow2", "1M", fill_mib=0)
    bs = await _bs(api, ssh_port, tmp_path / "bs")
    ok: dict[str, Any] = {"name": "t", "url": f"{base}/t.qcow2", "format": "qcow2", "backupStorageUuids": [bs["uuid"]]}
    cases: list[tuple[dict[str, Any], int, str]] = [
             ({"backupStorageUuids": ["1" * 32]}, 409, "no backup storage specified"),
             ({"url": "ftp://h/a.qcow2"}, 400, "ftp"),
             ({"url": "file:///nope/x.qcow2"}, 400, "not inside an image import directory"),
             ({"url": f"file://{tmp_path}/nope.qcow2"}, 400, "no such file"),
             ({"format": "vmdk"}, 400, "format"),
             ({"format": "raw"}, 400, "declared 'raw'"),
             ({"url": f"{base}/missing.qcow2"}, 409, "HTTP 404")]
    await api.call("ChangeBackupStorageState", uuid=bs["uuid"], stateEvent="disable")
    s, b = await api.raw("AddImage", **ok)
    assert s == 409 and "not in state Enabled" in b["error"]["details"], b
    await api.call("ChangeBackupStorageState", uuid=bs["uuid"], stateEvent="enable")
    for change, status, word in cases:
        s, b = await api.raw("AddImage", **{**ok, **change})
        assert s == status and word in b["error"]["details"], (change, b)
    assert await api.query("QueryImage") == []
    assert list((tmp_path / "bs" / "images").iterdir()) == []


async def test_cache_source_is_an_sftp_url_the_agent_can_fetch(api: Api, ssh_port: int, tmp_path: Path) -> None:
    await _bs(api, ssh_port, tmp_path / "bs")
    src = tmp_path / "s.qcow2"
    await _qcow2(src, "1M", fill_mib=0)
    img = (await api.call("AddImage", name="s", url=f"file://{src}", format="qcow2"))["inventory"]
    core = api.client.app[CORE]
    row = await core.db.fetchone("SELECT * FROM Image WHERE uuid=?", (img["uuid"],))
    got = await cache_source(core, row)
    assert got["url"].startswith("sftp://root@127.0.0.1:") and got["md5"] == img["md5Sum"]
    assert got["sftpPassword"] == PASSWORD and "word" not in got["url"] and got["sftpHostKey"].startswith("ssh-")
    source = fetch.sftp_source(got["url"], got["sftpPassword"], got["sftpHostKey"])
    async with aiohttp.ClientSession() as session:
        fetched = await fetch.fetch(source, tmp_path / "cached", session=session)
    assert (fetched.md5, fetched.size) == (got["md5"], got["size"])
    assert (tmp_path / "cached").read_bytes() == src.read_bytes()
