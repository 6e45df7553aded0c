"""Image inspection with real qemu-img, and image-cache downloads over file://, HTTP and SFTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from sftp_server import sftp_servers

from storage import qemuimg
from storage.errors import ChecksumMismatch, TransferFailed, UnsafeImage
from storage.inspect import inspect_image
from storage.service import StorageService
from zsutil.runner import run

MiB = 1 << 20


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[tuple[StorageService, str]]:
    s = StorageService(state_dir=tmp_path / "state")
    await s.start()
    ps = str(tmp_path / "ps")
    await s.init(ps, "ps-1")
    yield s, ps
    await s.stop()


async def test_backing_file_outside_is_rejected(tmp_path: Path) -> None:
    img = tmp_path / "evil.qcow2"
    await run(
        ["qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", str(img), "1M"], timeout=30
    )
    with pytest.raises(UnsafeImage) as e:
        await inspect_image(img, expected="qcow2")
    assert "backing-filename" in str(e.value) and "/etc/passwd" in str(e.value)


async def test_json_backing_is_rejected(tmp_path: Path) -> None:
    img = tmp_path / "json.qcow2"
    await qemuimg.create(img, size=MiB)
    name = 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/shadow"}}'
    await run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "raw", "-b", name, str(img)], timeout=30)
    with pytest.raises(UnsafeImage) as e:
        await inspect_image(img)
    assert "json:" in str(e.value)


async def test_external_data_file_is_rejected(tmp_path: Path) -> None:
    img = tmp_path / "df.qcow2"
    await run(
        ["qemu-img", "create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", str(img), "1M"],
        timeout=30,
    )
    with pytest.raises(UnsafeImage) as e:
        await inspect_image(img)
    assert "data-file" in str(e.value)


async def test_iso_and_format_mismatch(tmp_path: Path) -> None:
    iso = tmp_path / "x.iso"
    with open(iso, "wb") as f:  # noqa: ASYNC230
        f.truncate(MiB)
        f.seek(0x8001)
        f.write(b"CD001")
    assert (await inspect_image(iso, expected="iso"))[0] == "iso"
    with pytest.raises(UnsafeImage, match="declared 'qcow2'"):
        await inspect_image(iso, expected="qcow2")
    vmdk = tmp_path / "x.vmdk"
    await run(["qemu-img", "create", "-f", "vmdk", str(vmdk), "1M"], timeout=30)
    with pytest.raises(UnsafeImage, match="vmdk"):
        await inspect_image(vmdk)


async def test_unsafe_download_never_enters_the_cache(
    svc: tuple[StorageService, str], tmp_path: Path
) -> None:
    s, ps = svc
    img = tmp_path / "evil.qcow2"
    await run(
        ["qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", str(img), "1M"], timeout=30
    )
    with pytest.raises(UnsafeImage):
        await s.download_image(ps, "img-evil", "qcow2", f"file://{img}")
    assert not [f for f in Path(ps, "imagecache").rglob("*") if f.is_file()]  # noqa: ASYNC240
    assert not Path(ps, "imagecache/template/img-evil").exists()  # noqa: ASYNC240


GETS: list[str] = []


@web.middleware
async def _count(request: web.Request, handler):  # type: ignore[no-untyped-def]
    GETS.append(request.path)
    return await handler(request)


@pytest.fixture
async def http_server(tmp_path: Path) -> AsyncIterator[str]:
    GETS.clear()
    app = web.Application(middlewares=[_count])
    (tmp_path / "www").mkdir()
    app.router.add_static("/images", tmp_path / "www")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/images"
    await runner.cleanup()


async def test_http_download_records_md5_once(
    svc: tuple[StorageService, str], tmp_path: Path, http_server: str
) -> None:
    s, ps = svc
    img = tmp_path / "www" / "t.qcow2"
    await qemuimg.create(img, size=32 * MiB)
    await run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 0 4M", str(img)], timeout=30)
    md5 = hashlib.md5(img.read_bytes()).hexdigest()
    with pytest.raises(ChecksumMismatch):
        await s.download_image(ps, "img-h", "qcow2", f"{http_server}/t.qcow2", md5="0" * 32)
    assert not Path(ps, "imagecache/template/img-h/img-h.qcow2").exists()  # noqa: ASYNC240
    recs = [await s.download_image(ps, "img-h", "qcow2", f"{http_server}/t.qcow2", md5=md5) for _ in range(2)]
    assert recs[0] == recs[1] and recs[0].md5 == md5 and recs[0].size == img.stat().st_size
    cached = Path(recs[0].path)
    assert json.loads(cached.with_name(cached.name + ".json").read_text())["md5"] == md5
    assert hashlib.md5(cached.read_bytes()).hexdigest() == md5  # noqa: ASYNC240


async def test_concurrent_requests_download_once(
    svc: tuple[StorageService, str], tmp_path: Path, http_server: str
) -> None:
    s, ps = svc
    img = tmp_path / "www" / "c.qcow2"
    await qemuimg.create(img, size=8 * MiB)
    recs = await asyncio.gather(
        *[s.download_image(ps, "img-c", "qcow2", f"{http_server}/c.qcow2") for _ in range(4)]
    )
    assert len({r.path for r in recs}) == 1 and not list(Path(ps).rglob("*.partial"))  # noqa: ASYNC240
    assert GETS == ["/images/c.qcow2"]  # one download for four concurrent requests


@pytest.fixture
async def sftp_server() -> AsyncIterator[int]:
    async with sftp_servers(["127.0.0.1"], "p@ss word", "bs") as [(_, port)]:
        yield port


async def test_sftp_download(svc: tuple[StorageService, str], tmp_path: Path, sftp_server: int) -> None:
    s, ps = svc
    img = tmp_path / "bs" / "sftp image.qcow2"
    img.parent.mkdir()
    await qemuimg.create(img, size=16 * MiB)
    md5 = hashlib.md5(img.read_bytes()).hexdigest()
    url = f"sftp://bs:p%40ss%20word@127.0.0.1:{sftp_server}{str(img).replace(' ', '%20')}"
    rec = await s.download_image(ps, "img-s", "qcow2", url, md5=md5)
    assert rec.md5 == md5 and Path(rec.path).is_file()  # noqa: ASYNC240
    with pytest.raises(TransferFailed) as e:
        await s.download_image(ps, "img-t", "qcow2", url.replace("p%40ss", "bad"))
    assert "bad" not in str(e.value)
