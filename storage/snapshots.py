"""Offline snapshots of a stopped VM's volume as an external qcow2 chain.

Chain semantics. A volume is the file at its ``installPath`` V, which never changes. Snapshots live in
``<volume dir>/snapshots/<snapUuid>.qcow2``; every file references its backing file by absolute path::

    cache image  <-  S1  <-  S2  <-  S3  <-  V        (arrow = "is the backing file of")

* create(S): the current content of V becomes S (V is renamed to S, keeping its own backing reference)
  and a new empty overlay is created at V backed by S. No data is copied and no rebase is needed.
* revert(S): V is replaced by a new empty overlay on S; the old top (the changes since the newest
  snapshot) is discarded. Snapshots newer than S stay valid files (a branch: S3 -> S2 -> S).
* delete(S): every child of S (files whose backing file is S: V and/or snapshots) is rebased in safe
  mode onto S's own backing file (data of S the child does not override is copied into the child), then
  S is removed. The guest-visible content of every remaining file is unchanged and chains stay valid.

Every operation is idempotent (repeating it after success succeeds) and undoes its steps on failure.
The volume must not be in use by a running VM (offline snapshots).
"""

from __future__ import annotations

import asyncio
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from storage import files, qemuimg
from storage.errors import NotFound, StorageError
from storage.layout import partial_path, snapshot_dir, snapshot_path
from storage.revert import Reverter


@dataclass(frozen=True)
class ChainLink:
    path: str
    backing: str | None
    virtual_size: int
    actual_size: int


async def chain(volume: Path) -> list[ChainLink]:
    """The backing chain of ``volume``, top first, as ``qemu-img info --backing-chain`` reports it."""
    infos = await qemuimg.backing_chain(volume)
    paths = [str(volume)] + [i.full_backing_filename or "" for i in infos[:-1]]
    return [
        ChainLink(
            path=p, backing=i.full_backing_filename, virtual_size=i.virtual_size, actual_size=i.actual_size
        )
        for p, i in zip(paths, infos, strict=True)
    ]


async def verify(volume: Path) -> list[ChainLink]:
    """Check every qcow2 file of the chain (``qemu-img check``); raise naming the first broken file."""
    links = await chain(volume)
    for link in links:
        info = await qemuimg.info(link.path)
        if info.format != "qcow2":
            continue
        res = await qemuimg.check(link.path)
        if not res.ok:
            raise StorageError(
                f"chain of {volume}: {link.path} fails qemu-img check: {res.raw}",
                code="STORAGE.CHAIN_BROKEN",
                details={"path": link.path},
            )
    return links


async def create(volume: Path, snapshot_uuid: str) -> Path:
    """Freeze the current content of ``volume`` as snapshot ``snapshot_uuid``; return the snapshot path."""
    snap = snapshot_path(volume, snapshot_uuid)
    if snap.exists() and volume.exists():  # noqa: ASYNC240
        top = await qemuimg.info(volume)
        if top.full_backing_filename == str(snap):
            return snap  # already done
        raise StorageError(
            f"snapshot file {snap} exists but {volume} is not backed by it",
            code="STORAGE.CONFLICT",
            details={"field": "snapshotUuid", "value": snapshot_uuid},
        )
    if not volume.is_file():  # noqa: ASYNC240
        raise NotFound(
            f"volume {volume} does not exist", details={"field": "volumePath", "value": str(volume)}
        )
    size = (await qemuimg.info(volume)).virtual_size
    async with Reverter() as r:
        r.add(files.remove_dirs, files.make_dirs(snap.parent))
        os.rename(volume, snap)
        r.add(os.rename, snap, volume)
        tmp = partial_path(volume)
        r.add(files.remove_file, tmp)
        await qemuimg.create(tmp, size=size, backing=snap, backing_fmt="qcow2")
        os.rename(tmp, volume)
        r.add(files.remove_file, volume)  # undone before the rename back above (reverse order)
        await asyncio.to_thread(files.fsync_dir, volume.parent)
        r.success()
    return snap


async def revert(volume: Path, snapshot: Path) -> Path:
    """Make ``volume`` a new empty overlay on ``snapshot`` (the current top is discarded). Idempotent in the
    sense that reverting again yields the same guest-visible content (the snapshot's)."""
    if not snapshot.is_file():  # noqa: ASYNC240
        raise NotFound(
            f"snapshot {snapshot} does not exist", details={"field": "snapshotPath", "value": str(snapshot)}
        )
    if snapshot.parent != snapshot_dir(volume):
        raise StorageError(
            f"snapshot {snapshot} does not belong to volume {volume}",
            code="STORAGE.INVALID_ARGUMENT",
            details={"field": "snapshotPath"},
        )
    size = (await qemuimg.info(snapshot)).virtual_size
    tmp = partial_path(volume)
    async with Reverter() as r:
        r.add(files.remove_file, tmp)
        await qemuimg.create(tmp, size=size, backing=snapshot, backing_fmt="qcow2")
        os.replace(tmp, volume)  # atomic: the volume is either the old top or the new overlay
        r.success()
    return volume


async def _children(volume: Path, snapshot: Path) -> list[Path]:
    """Files of this volume (V and its snapshots) whose backing file is ``snapshot``."""
    candidates = [volume, *sorted(p for p in snapshot_dir(volume).glob("*.qcow2") if p != snapshot)]
    out = []
    for c in candidates:
        if c.is_file() and (await qemuimg.info(c)).full_backing_filename == str(snapshot):
            out.append(c)
    return out


async def delete(volume: Path, snapshot: Path) -> bool:
    """Delete ``snapshot``, merging it into its children first. A missing snapshot succeeds (False)."""
    if not snapshot.exists():  # noqa: ASYNC240
        return False
    info = await qemuimg.info(snapshot)
    parent, parent_fmt = info.full_backing_filename, info.backing_format or "qcow2"
    async with Reverter() as r:
        for child in await _children(volume, snapshot):
            await qemuimg.rebase(child, backing=parent, backing_fmt=parent_fmt, safe=True)
            # The child now holds S's data: pointing it back at S (unsafe) restores the old chain exactly.
            r.add(functools.partial(qemuimg.rebase, child, backing=snapshot, backing_fmt="qcow2", safe=False))
        files.remove_file(snapshot)
        r.success()
    return True
