"""Local storage with real qemu-img: image cache, root and data volumes, offline snapshot chains."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storage_helpers import qio_pattern_ok, qio_write

from storage import qemuimg
from storage.errors import Conflict, NotFound
from storage.layout import VolumeType
from storage.service import StorageService

MiB = 1 << 20


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[tuple[StorageService, str]]:
    s = StorageService(state_dir=tmp_path / "state")
    await s.start()
    ps = str(tmp_path / "ps")
    await s.init(ps, "ps-1", "host-1")
    yield s, ps
    await s.stop()


async def _base_image(tmp_path: Path) -> Path:
    img = tmp_path / "src" / "base.qcow2"
    img.parent.mkdir()
    await qemuimg.create(img, size=64 * MiB)
    await qio_write(img, 0xAA, 0)
    return img


async def test_root_volume_is_overlay_on_cache(svc: tuple[StorageService, str], tmp_path: Path) -> None:
    s, ps = svc
    img = await _base_image(tmp_path)
    rec = await s.download_image(ps, "img-1", "qcow2", f"file://{img}")
    assert rec.path == f"{ps}/imagecache/template/img-1/img-1.qcow2"
    vol = await s.create_volume_from_cache(ps, VolumeType.ROOT, "acct-a", "vol-1", "img-1", size=128 * MiB)
    assert vol == Path(ps) / "rootVolumes/acct-acct-a/vol-vol-1/vol-1.qcow2"
    info = await qemuimg.info(vol)
    assert info.full_backing_filename == rec.path and info.backing_format == "qcow2"
    assert info.virtual_size == 128 * MiB
    assert await s.volume_sizes(ps, str(vol)) == (info.virtual_size, info.actual_size)  # header read
    assert await qio_pattern_ok(vol, 0xAA, 0)
    small = await s.create_volume_from_cache(ps, VolumeType.ROOT, "acct-a", "vol-2", "img-1", size=MiB)
    assert (await qemuimg.info(small)).virtual_size == 64 * MiB  # never smaller than the image
    # idempotent: same request again succeeds; a different image for the same volume conflicts
    assert await s.create_volume_from_cache(ps, VolumeType.ROOT, "acct-a", "vol-1", "img-1") == vol
    await s.download_image(ps, "img-2", "qcow2", f"file://{img}")
    with pytest.raises(Conflict):
        await s.create_volume_from_cache(ps, VolumeType.ROOT, "acct-a", "vol-1", "img-2")
    with pytest.raises(NotFound):
        await s.create_volume_from_cache(ps, VolumeType.ROOT, "acct-a", "vol-9", "img-missing")
    assert await s.delete_volume(ps, str(vol)) is True
    assert not vol.parent.exists()
    assert await s.delete_volume(ps, str(vol)) is False


async def test_data_volume_and_capacity(svc: tuple[StorageService, str]) -> None:
    s, ps = svc
    vol = await s.create_empty_volume(ps, VolumeType.DATA, "acct-a", "dv-1", 32 * MiB)
    assert vol == Path(ps) / "dataVolumes/acct-acct-a/vol-dv-1/dv-1.qcow2"
    info = await qemuimg.info(vol)
    assert info.virtual_size == 32 * MiB and info.backing_filename is None
    assert await s.create_empty_volume(ps, VolumeType.DATA, "acct-a", "dv-1", 32 * MiB) == vol
    with pytest.raises(Conflict):
        await s.create_empty_volume(ps, VolumeType.DATA, "acct-a", "dv-1", 64 * MiB)
    assert (await s.capacity(ps)).used_by_storage < info.actual_size  # the walk at init: not re-done per call
    cap = await s.capacity(ps, measure_used=True)
    assert 0 < cap.available <= cap.total and cap.used_by_storage >= info.actual_size > 0
    assert await s.volume_sizes(ps, str(vol)) == (32 * MiB, info.actual_size)


async def test_snapshot_chain_revert_and_delete(svc: tuple[StorageService, str], tmp_path: Path) -> None:
    s, ps = svc
    img = await _base_image(tmp_path)
    await s.download_image(ps, "img-1", "qcow2", f"file://{img}")
    vol = await s.create_volume_from_cache(ps, VolumeType.ROOT, "acct-a", "vol-1", "img-1")
    snaps = []
    for i, uuid in enumerate(["s1", "s2", "s3"], start=1):
        await qio_write(vol, i, MiB)
        snaps.append(await s.create_snapshot(ps, str(vol), uuid))
        assert await s.create_snapshot(ps, str(vol), uuid) == snaps[-1]  # idempotent
    await qio_write(vol, 4, MiB)
    assert (await qemuimg.info(vol)).full_backing_filename == str(snaps[2])

    await s.revert_snapshot(ps, str(vol), str(snaps[1]))
    assert await qio_pattern_ok(vol, 2, MiB) and await qio_pattern_ok(vol, 0xAA, 0)
    assert (await qemuimg.info(vol)).full_backing_filename == str(snaps[1])

    assert await s.delete_snapshot(ps, str(vol), str(snaps[0])) is True
    assert not snaps[0].exists()
    assert await s.delete_snapshot(ps, str(vol), str(snaps[0])) is False  # idempotent
    links = await s.verify_chain(ps, str(vol))
    cache = f"{ps}/imagecache/template/img-1/img-1.qcow2"
    assert [li.path for li in links] == [str(vol), str(snaps[1]), cache]
    for f in (vol, snaps[1], snaps[2]):
        assert (await qemuimg.check(f)).ok
    chain = await qemuimg.backing_chain(vol)
    assert [c.filename for c in chain] == [str(vol), str(snaps[1]), cache]
    assert await qio_pattern_ok(vol, 2, MiB) and await qio_pattern_ok(vol, 0xAA, 0)
    assert await qio_pattern_ok(snaps[2], 3, MiB)  # the newer branch stays valid
    assert await qio_pattern_ok(snaps[1], 2, MiB)


async def test_delete_snapshot_with_two_children(svc: tuple[StorageService, str]) -> None:
    s, ps = svc
    vol = await s.create_empty_volume(ps, VolumeType.DATA, "acct-a", "dv-1", 8 * MiB)
    await qio_write(vol, 7, 0)
    s1 = await s.create_snapshot(ps, str(vol), "s1")
    await qio_write(vol, 8, MiB)
    s2 = await s.create_snapshot(ps, str(vol), "s2")
    await s.revert_snapshot(ps, str(vol), str(s1))  # vol and s2 are both children of s1
    await s.delete_snapshot(ps, str(vol), str(s1))
    assert (
        await qio_pattern_ok(vol, 7, 0)
        and await qio_pattern_ok(s2, 7, 0)
        and await qio_pattern_ok(s2, 8, MiB)
    )
    assert (await qemuimg.info(vol)).backing_filename is None
    await s.verify_chain(ps, str(vol))
