"""Host-to-host volume copy between two agents on loopback with different state dirs and tokens.

The source agent runs in-process; the destination agent runs in its own mount namespace where the same
PS url is a different directory (so "identical absolute paths" really means a second copy of the bits).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from storage_agent import Agent, NamespacedAgent
from storage_helpers import qio_write

from kvmagent.contract import storage as c
from storage import files, qemuimg
from zsutil.runner import run

MiB = 1 << 20


@dataclass
class Pair:
    src: Agent
    dst: NamespacedAgent
    ps: Path  # PS url (identical on both hosts)
    dst_dir: Path  # where the destination's PS url really lives

    def on_dst(self, path: str | Path) -> Path:
        return self.dst_dir / Path(path).relative_to(self.ps)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    ps = tmp_path / "ps"
    src = await Agent(tmp_path / "src-state").start()
    dst = await NamespacedAgent(tmp_path / "dst-state", ps, tmp_path / "dst-ps").start()
    try:
        await src.call(c.InitCmd(storagePath=str(ps), primaryStorageUuid="ps-1", hostUuid="h1"))
        p = Pair(src, dst, ps, tmp_path / "dst-ps")
        await dst_call(p, c.InitCmd(storagePath=str(ps), primaryStorageUuid="ps-1", hostUuid="h2"))
        yield p
    finally:
        dst.kill()
        await src.stop()


async def dst_call(p: Pair, cmd: c.LocalStorageCmd, expect: int = 200) -> dict:
    """Call the destination agent (same HTTP session as the source's test client, its own token)."""
    assert p.src.http is not None
    async with p.src.http.post(
        p.dst.url + cmd.PATH,
        json=cmd.model_dump(exclude_none=True),
        headers={"Authorization": f"Bearer {p.dst.token}"},
    ) as resp:
        body = await resp.json()
        assert resp.status == expect, body
        return body


async def _volume_with_snapshots(p: Pair, tmp_path: Path) -> tuple[str, list[str], str]:
    img = tmp_path / "base.qcow2"
    await qemuimg.create(img, size=64 * MiB)
    await qio_write(img, 0xAA, 0, MiB)
    dl = await p.src.call(
        c.DownloadImageCmd(storagePath=str(p.ps), imageUuid="img-1", format="qcow2", url=f"file://{img}")
    )
    vol = (
        await p.src.call(
            c.CreateVolumeFromCacheCmd(
                storagePath=str(p.ps), accountUuid="a1", volumeUuid="v1", imageUuid="img-1"
            )
        )
    ).installPath
    snaps = []
    for i in range(1, 4):
        await qio_write(Path(vol), i, 4 * MiB, 2 * MiB)
        r = await p.src.call(c.CreateSnapshotCmd(storagePath=str(p.ps), volumePath=vol, snapshotUuid=f"s{i}"))
        snaps.append(r.snapshotPath)
    await qio_write(Path(vol), 9, 16 * MiB, 16 * MiB)
    await run(
        ["qemu-io", "-d", "unmap", "-f", "qcow2", "-c", f"discard {17 * MiB} {12 * MiB}", vol], timeout=60
    )
    return vol, snaps, dl.installPath


async def test_copy_volume_chain_and_base_image(pair: Pair, tmp_path: Path) -> None:
    p = pair
    vol, snaps, base = await _volume_with_snapshots(p, tmp_path)
    paths = [*snaps, vol]
    before = {f: files.file_digest(f, "sha256") for f in [*paths, base]}
    assert files.allocated_bytes(vol) < Path(vol).stat().st_size - 8 * MiB  # the volume file is sparse  # noqa: ASYNC240

    reply = await p.src.call(
        c.CopyToRemoteCmd(
            storagePath=str(p.ps),
            paths=paths,
            baseImagePath=base,
            destAgentUrl=p.dst.url,
            destToken=p.dst.token,
        )
    )
    copied = {x.path: x for x in reply.copied}
    assert set(copied) >= {*paths, base} and not copied[base].skipped
    for f in [*paths, base]:
        d = p.on_dst(f)
        assert files.file_digest(d, "sha256") == before[f] == files.file_digest(f, "sha256")  # source intact
        assert d.stat().st_size == Path(f).stat().st_size  # noqa: ASYNC240
        assert files.allocated_bytes(d) <= files.allocated_bytes(f) + 256 * 1024  # holes stay holes
    assert files.allocated_bytes(p.on_dst(vol)) < Path(vol).stat().st_size - 8 * MiB  # noqa: ASYNC240
    # identical absolute paths: the chain resolves on the destination as it does on the source
    out = await run(p.dst.nsenter("qemu-img", "info", "--output=json", "--backing-chain", vol), timeout=60)
    assert [x["filename"] for x in json.loads(out.stdout)] == [vol, snaps[2], snaps[1], snaps[0], base]
    for pattern, offset in ((0xAA, 0), (3, 4 * MiB), (9, 16 * MiB)):  # base, newest snapshot, top
        cmd = f"read -P {pattern} {offset} {MiB}"
        out = await run(p.dst.nsenter("qemu-io", "-f", "qcow2", "-c", cmd, vol), timeout=60)
        assert "Pattern verification failed" not in out.stdout
    for f in paths:
        await run(p.dst.nsenter("qemu-img", "check", "-q", f), timeout=60)
    # the cache record travelled: the destination's cache knows the image (no new download needed)
    got = await dst_call(p, c.CheckBitsCmd(storagePath=str(p.ps), paths=[base], withMd5=True))
    assert got["bits"][0]["existing"] and got["availableCapacity"] > 0

    # a second copy skips the base image (present on the destination with the same md5)
    again = await p.src.call(
        c.CopyToRemoteCmd(
            storagePath=str(p.ps),
            paths=[vol],
            baseImagePath=base,
            destAgentUrl=p.dst.url,
            destToken=p.dst.token,
        )
    )
    assert [x.skipped for x in again.copied] == [True, False]


async def test_wrong_token_and_path_outside_storage_are_refused(pair: Pair, tmp_path: Path) -> None:
    p = pair
    vol, _snaps, _base = await _volume_with_snapshots(p, tmp_path)
    body = await p.src.call(
        c.CopyToRemoteCmd(storagePath=str(p.ps), paths=[vol], destAgentUrl=p.dst.url, destToken="wrong"),
        expect=502,
    )
    assert "HTTP 401" in body["error"]["message"]
    body = await p.src.call(
        c.CopyToRemoteCmd(
            storagePath=str(p.ps), paths=["/etc/passwd"], destAgentUrl=p.dst.url, destToken=p.dst.token
        ),
        expect=400,
    )
    assert body["error"]["details"]["value"] == "/etc/passwd"
    assert not p.on_dst(vol).exists()


async def test_copy_killed_half_way_leaves_no_partial_file(pair: Pair, tmp_path: Path) -> None:
    p = pair
    big = await p.src.call(
        c.CreateEmptyVolumeCmd(storagePath=str(p.ps), accountUuid="a1", volumeUuid="big", size=1024 * MiB)
    )
    await run(["qemu-io", "-f", "qcow2", "-c", f"write -P 5 0 {600 * MiB}", big.installPath], timeout=120)
    digest = files.file_digest(big.installPath, "sha256")
    partial = p.on_dst(big.installPath + ".partial")
    task = asyncio.create_task(
        p.src.call(
            c.CopyToRemoteCmd(
                storagePath=str(p.ps), paths=[big.installPath], destAgentUrl=p.dst.url, destToken=p.dst.token
            ),
            expect=502,
        )
    )
    for _ in range(2000):
        if partial.exists() and files.allocated_bytes(partial) > 16 * MiB:
            break
        await asyncio.sleep(0.005)
    assert partial.exists(), "the copy never started"
    p.dst.kill()  # the destination agent crashes half-way
    body = await task
    assert "failed" in body["error"]["message"]
    assert partial.exists() and not p.on_dst(big.installPath).exists()  # a crash leaves the partial...
    await p.dst.start()  # restart: reconcile removes the leftover
    assert not partial.exists() and not p.on_dst(big.installPath).exists()
    assert list(p.dst_dir.rglob("*.partial")) == []
    assert files.file_digest(big.installPath, "sha256") == digest  # source intact
