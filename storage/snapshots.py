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
create, revert and delete are OFFLINE: the volume must not be in use by a running VM.

Live snapshots (:func:`create_live`, the volume of a RUNNING VM) give the same on-disk result (V backed by
S, S holding the content at snapshot time) through hard links, because QEMU identifies each open image by
the NAME it was opened under and reopens it by that name: libvirt opens images with ``auto-read-only``, so
when the old top becomes a backing file QEMU reopens it read-only BY NAME. Renaming V to S before the
switch (the obvious way) makes that reopen open the NEW overlay at V as the old top's file: silent data
corruption. So the old top keeps the name V until QEMU has switched; the new top is created under a second
name ``<volume dir>/live/<snapUuid>.qcow2`` (kept while the VM runs: QEMU knows the new top by that name)
and only then becomes V (link + atomic rename). The offline operations drop those names (no VM runs then).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from storage import files, qemuimg
from storage.errors import NotFound, StorageError
from storage.layout import check_id, partial_path, snapshot_dir, snapshot_path
from zsutil.revert import Reverter

#: The hypervisor step of a live snapshot: make the image at the given path the running disk's active
#: layer, the current one its backing (kvmagent's ``HypervisorDriver.switch_disk_top``).
SwitchFn = Callable[[Path], Awaitable[None]]


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
    drop_live_names(volume)
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
    drop_live_names(volume)
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
    drop_live_names(volume)
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


# ---------------------------------------------------------------- live snapshots


def live_name(volume: Path, snapshot_uuid: str) -> Path:
    """The second name of the active layer a live snapshot ``snapshot_uuid`` created (see module doc)."""
    return volume.parent / "live" / f"{check_id('snapshotUuid', snapshot_uuid)}.qcow2"


def drop_live_names(volume: Path) -> None:
    """Remove the second names live snapshots left (hard links: no data goes). Only while no VM runs on
    ``volume``: a running QEMU may reopen its active layer by such a name."""
    files.remove_tree(volume.parent / "live")


async def _overlay_on_locked(path: Path, backing: Path, size: int) -> None:
    """``qemu-img create -u``: ``backing`` is open read-write by QEMU, which holds its write lock."""
    tmp = partial_path(path)
    await qemuimg.create(tmp, size=size, backing=backing, backing_fmt="qcow2", unsafe=True)
    os.rename(tmp, path)


async def create_live(volume: Path, snapshot_uuid: str, switch: SwitchFn) -> Path:
    """Snapshot ``volume`` while a running VM writes to it; the result on disk is that of :func:`create`.

    Steps: (1) S becomes a second name of V's image (the frozen content; QEMU keeps writing to it until
    step 3); (2) a new empty overlay backed by S is created at :func:`live_name`; (3) ``switch`` makes it
    the VM's active layer (the current image becomes its backing); (4) V names the new overlay (link +
    atomic rename; the live name stays). A failure in steps 1-3 undoes them: V is untouched, S and the
    overlay are gone. After step 3 nothing is undone (the VM writes to the new overlay): a failing step 4
    raises, and repeating the call finishes it. Idempotent: V already backed by S returns S at once.
    """
    snap, top = snapshot_path(volume, snapshot_uuid), live_name(volume, snapshot_uuid)
    if not volume.is_file():  # noqa: ASYNC240
        raise NotFound(f"volume {volume} does not exist", details={"field": "volumePath", "value": str(volume)})
    if snap.exists():
        if (await qemuimg.info(volume)).full_backing_filename == str(snap):
            return snap  # already done
        if not os.path.samefile(snap, volume):  # noqa: ASYNC240
            raise StorageError(f"snapshot file {snap} exists but {volume} is not backed by it",
                               code="STORAGE.CONFLICT", details={"field": "snapshotUuid", "value": snapshot_uuid})
    size = (await qemuimg.info(volume)).virtual_size
    async with Reverter() as r:
        if not snap.exists():
            r.add(files.remove_dirs, files.make_dirs(snap.parent))
            os.link(volume, snap)
            r.add(files.remove_file, snap)
        if not top.exists():
            r.add(files.remove_dirs, files.make_dirs(top.parent))
            r.add(files.remove_file, partial_path(top))
            await _overlay_on_locked(top, snap, size)
            r.add(files.remove_file, top)
        await switch(top)
        r.success()
    tmp = partial_path(volume)
    files.remove_file(tmp)
    os.link(top, tmp)
    os.rename(tmp, volume)
    await asyncio.to_thread(files.fsync_dir, volume.parent)
    return snap
