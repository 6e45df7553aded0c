"""storage.snapshots.create_live with real qemu-img, while a real QEMU process (qemu-storage-daemon) holds the
volume open read-write with its locks, as a running VM does. The hypervisor step is injected: a failing one
proves the undo, a recording one the file steps around it (the real switch is in tests/contract and e2e)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storage_helpers import qio_write

from storage import qemuimg, snapshots
from storage.errors import StorageError
from storage.layout import snapshot_path
from zsutil.runner import run

MiB = 1 << 20


@pytest.fixture
async def volume(tmp_path: Path) -> Path:
    """base.qcow2 (pattern 0xAA at 0) <- vol-1/vol-1.qcow2 (pattern 0x11 at 1 MiB), like a root volume."""
    base = tmp_path / "cache" / "base.qcow2"
    base.parent.mkdir()
    await qemuimg.create(base, size=64 * MiB)
    await qio_write(base, 0xAA, 0)
    vol = tmp_path / "acct-a" / "vol-1" / "vol-1.qcow2"
    vol.parent.mkdir(parents=True)
    await qemuimg.create(vol, size=64 * MiB, backing=base, backing_fmt="qcow2")
    await qio_write(vol, 0x11, MiB)
    return vol


@pytest.fixture
async def held(volume: Path, tmp_path: Path) -> AsyncIterator[Path]:
    """``volume`` opened read-write (write lock taken) by qemu-storage-daemon for the test's duration."""
    pidfile = tmp_path / "qsd.pid"
    proc = await asyncio.create_subprocess_exec(
        "qemu-storage-daemon", "--blockdev", f"driver=file,node-name=f,filename={volume}",
        "--blockdev", "driver=qcow2,node-name=q,file=f", "--pidfile", str(pidfile),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(200):
            if pidfile.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.returncode is None and pidfile.exists(), "qemu-storage-daemon did not start"
        with pytest.raises(StorageError):  # the lock is real: an exclusive open fails
            await qemuimg.info(volume, force_share=False)
        yield volume
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def qio_pattern_ok(path: Path, pattern: int, offset: int, length: int = 65536) -> bool:
    """Guest-visible bytes at ``offset`` all ``pattern``: read-only with force-share (QEMU holds the lock)."""
    res = await run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {pattern} {offset} {length}", str(path)],
                    timeout=60, ok_codes=(0, 1))
    return res.rc == 0 and "Pattern verification failed" not in res.stdout + res.stderr


def _same(a: Path, b: Path) -> bool:
    """Two names of one file (hard links)."""
    return os.stat(a).st_ino == os.stat(b).st_ino


def _leftovers(vol: Path) -> list[str]:
    return sorted(str(p.relative_to(vol.parent)) for p in vol.parent.rglob("*") if p.is_file() and p != vol)


async def test_failed_switch_leaves_volume_intact_and_snapshot_gone(held: Path) -> None:
    vol = held
    before = (os.stat(vol).st_ino, (await qemuimg.info(vol)).full_backing_filename)
    seen: list[Path] = []

    async def switch(new_top: Path) -> None:
        seen.append(new_top)
        snap = snapshot_path(vol, "snap-1")
        assert _same(snap, vol), "step 1: S is a second name of the volume's image"
        assert (await qemuimg.info(new_top)).full_backing_filename == str(snap), "step 2: overlay on S"
        raise RuntimeError("hypervisor refused")

    with pytest.raises(RuntimeError, match="hypervisor refused"):
        await snapshots.create_live(vol, "snap-1", switch)
    assert seen == [snapshots.live_name(vol, "snap-1")]
    assert (os.stat(vol).st_ino, (await qemuimg.info(vol)).full_backing_filename) == before
    assert os.stat(vol).st_nlink == 1
    assert _leftovers(vol) == [], "S, the overlay and partial files are removed"
    assert not snapshot_path(vol, "snap-1").parent.exists() and not snapshots.live_name(vol, "snap-1").parent.exists()
    assert await qio_pattern_ok(vol, 0x11, MiB) and await qio_pattern_ok(vol, 0xAA, 0)


async def test_live_create_gives_the_offline_chain_and_is_idempotent(held: Path) -> None:
    vol = held
    old_inode = os.stat(vol).st_ino
    base = (await qemuimg.info(vol)).full_backing_filename
    calls: list[Path] = []

    async def switch(new_top: Path) -> None:
        calls.append(new_top)

    snap = await snapshots.create_live(vol, "snap-1", switch)
    top = snapshots.live_name(vol, "snap-1")
    assert snap == snapshot_path(vol, "snap-1") and calls == [top]
    assert os.stat(snap).st_ino == old_inode, "the snapshot IS the image QEMU had open (no copy)"
    assert _same(vol, top) and os.stat(vol).st_ino != old_inode
    links = await snapshots.chain(vol)
    assert [li.path for li in links] == [str(vol), str(snap), base]
    assert links[0].virtual_size == 64 * MiB
    assert await qio_pattern_ok(snap, 0x11, MiB)
    # idempotent: a repeat changes nothing and does not call the hypervisor again
    assert await snapshots.create_live(vol, "snap-1", switch) == snap and calls == [top]
    assert _same(vol, top)
    # a second live snapshot chains on the first
    snap2 = await snapshots.create_live(vol, "snap-2", switch)
    assert [li.path for li in await snapshots.chain(vol)] == [str(vol), str(snap2), str(snap), base]
    assert _same(snap2, top), "the first live top is frozen as snap-2"


async def test_offline_operations_drop_the_live_names(volume: Path) -> None:
    async def switch(new_top: Path) -> None:
        return None

    snap = await snapshots.create_live(volume, "snap-1", switch)
    assert snapshots.live_name(volume, "snap-1").exists()
    await snapshots.revert(volume, snap)  # no VM runs: the second names are not needed any more
    assert not snapshots.live_name(volume, "snap-1").parent.exists()
    assert os.stat(volume).st_nlink == 1 and await qio_pattern_ok(volume, 0x11, MiB)


async def test_existing_unrelated_snapshot_file_conflicts(volume: Path) -> None:
    snap = snapshot_path(volume, "snap-1")
    snap.parent.mkdir()
    await qemuimg.create(snap, size=MiB)

    async def switch(new_top: Path) -> None:
        raise AssertionError("must not be reached")

    with pytest.raises(StorageError) as e:
        await snapshots.create_live(volume, "snap-1", switch)
    assert e.value.code == "STORAGE.CONFLICT" and e.value.details["field"] == "snapshotUuid"


async def test_failure_after_the_switch_is_finished_by_a_repeat(held: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the hypervisor switched, nothing is undone (the VM writes to the new layer); the call fails and
    a repeat (the controller's retry) finishes the last step."""
    vol = held
    calls: list[Path] = []

    async def switch(new_top: Path) -> None:
        calls.append(new_top)

    real_rename = os.rename

    def failing_rename(src: Path, dst: Path) -> None:
        if Path(dst) == vol:  # only the last step (the new top becomes V)
            raise OSError(28, "No space left on device (injected)")
        real_rename(src, dst)

    monkeypatch.setattr(snapshots.os, "rename", failing_rename)
    with pytest.raises(OSError, match="injected"):
        await snapshots.create_live(vol, "snap-1", switch)
    monkeypatch.setattr(snapshots.os, "rename", real_rename)
    snap, top = snapshot_path(vol, "snap-1"), snapshots.live_name(vol, "snap-1")
    assert _same(snap, vol) and top.exists(), "the switched state is kept: S is still V, the new top exists"
    assert await snapshots.create_live(vol, "snap-1", switch) == snap
    assert calls == [top, top], "the repeat asks the hypervisor again (its switch is idempotent)"
    assert _same(vol, top) and (await qemuimg.info(vol)).full_backing_filename == str(snap)
    assert _leftovers(vol) == ["live/snap-1.qcow2", "snapshots/snap-1.qcow2"]
