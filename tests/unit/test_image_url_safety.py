"""Issue 18, security 5: AddImage reads files only from import directories, never downloads from loopback /
link-local / metadata / unspecified / multicast addresses (also after redirects), and without backup storage
hosts are not made to copy a local file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from apiclient import Api
from sftp_server import sftp_servers

from controller.backup import transfer
from controller.config import ControllerConfig
from controller.errors import InvalidArgument


@pytest.fixture
def controller_config(tmp_path: Path) -> ControllerConfig:
    (tmp_path / "import").mkdir()
    return ControllerConfig(db_path=str(tmp_path / "controller.db"), log_dir=str(tmp_path / "log"),
                            image_import_dirs=[str(tmp_path / "import")])


@pytest.fixture
async def bs(api: Api, tmp_path: Path) -> AsyncIterator[str]:
    async with sftp_servers(["127.0.0.1"], "secret", exec_commands=False) as [(_, port)]:
        inv = await api.inv("AddSftpBackupStorage", name="bs", url=str(tmp_path / "bs"), hostname="127.0.0.1",
                            username="root", password="secret", sshPort=port)
        yield inv["uuid"]


async def _refused(api: Api, url: str, bs: str | None, status: int, *words: str) -> None:
    extra = {"backupStorageUuids": [bs]} if bs else {}
    s, b = await api.raw("AddImage", name="x", url=url, format="qcow2", **extra)
    assert s == status and b["error"]["code"] == ("SYS.1007" if status == 400 else "SYS.1006"), (url, b)
    for w in words:
        assert w in b["error"]["details"], (url, w, b)
    assert await api.query("QueryImage") == []


async def test_file_urls_only_from_import_dirs(api: Api, bs: str, controller_config: ControllerConfig,
                                               tmp_path: Path) -> None:
    db = controller_config.db_path
    await _refused(api, f"file://{db}", bs, 400, "url", db, "import directory", str(tmp_path / "import"))
    await _refused(api, "file:///etc/shadow", bs, 400, "/etc/shadow", "import directory")
    (tmp_path / "import" / "link.qcow2").symlink_to(db)   # a symlink out of the directory does not help
    await _refused(api, f"file://{tmp_path}/import/link.qcow2", bs, 400, "import directory")
    await _refused(api, f"file://{tmp_path}/import/../controller.db", bs, 400, "import directory")
    assert not (tmp_path / "bs" / "images").exists()


async def test_no_backup_storage_no_host_local_image(api: Api, tmp_path: Path) -> None:
    img = tmp_path / "import" / "a.qcow2"
    img.write_bytes(b"QFI\xfb")
    await _refused(api, f"file://{img}", None, 409, "backupStorageUuids", "only from backup storage")


@pytest.mark.parametrize("url,word", [
    ("http://127.0.0.1:1/a.qcow2", "loopback"), ("http://localhost/a.qcow2", "loopback"),
    ("http://169.254.169.254/latest/meta-data", "link-local"), ("http://[::1]/a", "loopback"),
    ("http://0.0.0.0/a", "unspecified"), ("https://224.0.0.1/a", "multicast"),
    ("http://[::ffff:127.0.0.1]/a", "loopback"), ("http://[fe80::1]/a", "link-local")])
async def test_internal_http_targets_refused(api: Api, bs: str, url: str, word: str) -> None:
    await _refused(api, url, bs, 400, "url", word)


async def test_redirect_to_loopback_is_refused() -> None:
    """A mirror on an allowed address (127.0.0.2 is allowed here, standing in for a public server) that
    redirects to a loopback service: the redirect target is never contacted."""
    hits: list[str] = []

    async def secret(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=b"root:x:0:0")

    async def mirror(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(inner.make_url("/secret")))

    inner_app, outer_app = web.Application(), web.Application()
    inner_app.router.add_get("/secret", secret)
    outer_app.router.add_get("/img", mirror)
    inner = TestServer(inner_app, host="127.0.0.1")
    outer = TestServer(outer_app, host="127.0.0.2")
    async with inner, outer:
        with pytest.raises(InvalidArgument, match="loopback"):
            async with transfer.open_source(str(outer.make_url("/img")), ["127.0.0.2/32"]):
                pass
        # a name resolving to a forbidden address is refused at connect time too (DNS rebinding)
        with pytest.raises(InvalidArgument, match="loopback"):
            async with transfer.open_source(f"http://localhost:{inner.port}/secret", ["127.0.0.2/32"]):
                pass
    assert hits == []
