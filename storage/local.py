"""Local primary storage on one host: init, capacity, volumes (root overlays on the cache, empty data
volumes), deletion. Paths come from :class:`storage.layout.LocalLayout`.

Guarantees: every operation is idempotent (creating an existing identical volume succeeds, creating one
that differs raises :class:`Conflict`, deleting something missing succeeds); a failed create leaves no
file or directory behind (Reverter); volume files appear atomically (written as ``*.partial``, renamed).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from storage import files, qemuimg
from storage.errors import Conflict, InvalidArgument, NotFound
from storage.layout import LocalLayout, VolumeType, partial_path
from zsutil.revert import Reverter


@dataclass(frozen=True)
class Capacity:
    """Capacity of the file system holding the storage (statvfs) and what the storage's files occupy."""

    total: int
    available: int
    total_physical: int
    available_physical: int
    used_by_storage: int


@dataclass(frozen=True)
class VolumeInfo:
    path: Path
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None
    chain: list[str]


#: ``usedByStorage`` walks the whole storage tree, so it is measured only when asked for
#: (:meth:`LocalStorage.capacity` with ``measure_used=True``: the Init and Capacity commands) and reused,
#: at most this old (seconds), by every other reply. Total and available space (statvfs) are exact in
#: every reply. (Walking on the replies of volume operations cost most of an agent's CPU at thousands of
#: volumes, for a figure the controller does not read there.)
USED_REFRESH = 30.0


def _used(layout: LocalLayout) -> int:
    return files.tree_allocated([layout.root / d for d in ("rootVolumes", "dataVolumes", "imagecache")])


def _capacity(layout: LocalLayout, used: int) -> Capacity:
    st = os.statvfs(layout.root)
    total = st.f_blocks * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    return Capacity(
        total=total, available=avail, total_physical=total, available_physical=avail, used_by_storage=used
    )


class LocalStorage:
    """One local primary storage (the directory ``layout.root`` on this host)."""

    def __init__(self, layout: LocalLayout) -> None:
        self.layout = layout
        self._used: tuple[float, int] | None = None  # (monotonic time, bytes)

    async def init(self, ps_uuid: str, host_uuid: str | None = None) -> Capacity:
        """Create the root and its marker. Re-init with the same uuid succeeds; another uuid conflicts."""
        root = self.layout.root
        marker = self.layout.marker
        if marker.exists():
            cur = json.loads(marker.read_text()).get("primaryStorageUuid")
            if cur != ps_uuid:
                raise Conflict(
                    f"{root} is already primary storage {cur}, not {ps_uuid}",
                    details={"field": "primaryStorageUuid", "value": ps_uuid, "existing": cur},
                )
        else:
            root.mkdir(parents=True, exist_ok=True)
            tmp = partial_path(marker)
            tmp.write_text(json.dumps({"primaryStorageUuid": ps_uuid, "hostUuid": host_uuid}))
            os.replace(tmp, marker)
        for d in ("rootVolumes", "dataVolumes", "imagecache/template", "imagecache/iso"):
            (root / d).mkdir(parents=True, exist_ok=True)
        return await self.capacity(measure_used=True)

    async def capacity(self, *, measure_used: bool = False) -> Capacity:
        """Total and available bytes now; ``used_by_storage`` measured now when ``measure_used`` (or never
        measured yet), else the last measurement if younger than :data:`USED_REFRESH`, else -1 (unknown)."""
        if not self.layout.root.is_dir():
            raise NotFound(
                f"primary storage directory {self.layout.root} does not exist; init it first",
                details={"field": "storagePath", "value": str(self.layout.root)},
            )
        now = time.monotonic()
        if measure_used or self._used is None:
            self._used = (now, await asyncio.to_thread(_used, self.layout))
        used = self._used[1] if now - self._used[0] <= USED_REFRESH else -1
        return await asyncio.to_thread(_capacity, self.layout, used)

    async def create_from_cache(
        self,
        kind: VolumeType,
        account_uuid: str,
        volume_uuid: str,
        cache_path: Path,
        cache_format: str,
        cache_virtual_size: int,
        size: int | None = None,
    ) -> Path:
        """Root (or data) volume = qcow2 overlay on a cached image (``-b <cache> -F <fmt>``, one
        ``qemu-img create``), of ``size`` when larger than the image's ``cache_virtual_size``, else of the
        image's size. Idempotent on (path, backing file)."""
        if cache_format not in ("qcow2", "raw"):
            raise InvalidArgument(
                f"image format {cache_format!r} cannot back a volume; allowed: qcow2, raw",
                details={"field": "format", "value": cache_format},
            )
        if not cache_path.is_file():  # noqa: ASYNC240
            raise NotFound(
                f"image {cache_path} is not in the cache of this host; download it first",
                details={"field": "imageUuid", "value": cache_path.stem},
            )
        path = self.layout.volume_path(kind, account_uuid, volume_uuid)
        if path.exists():
            info = await qemuimg.info(path)
            if info.full_backing_filename != str(cache_path):
                raise Conflict(
                    f"volume {path} exists with backing file {info.full_backing_filename!r}, "
                    f"not {str(cache_path)!r}",
                    details={"field": "volumeUuid", "value": volume_uuid},
                )
            return path
        async with Reverter() as r:
            r.add(files.remove_dirs, files.make_dirs(path.parent))
            tmp = partial_path(path)
            r.add(files.remove_file, tmp)
            grow = size if size is not None and size > cache_virtual_size else None
            await qemuimg.create(tmp, backing=cache_path, backing_fmt=cache_format, size=grow)
            os.replace(tmp, path)
            r.success()
        return path

    async def create_empty(self, kind: VolumeType, account_uuid: str, volume_uuid: str, size: int) -> Path:
        """Empty qcow2 volume of ``size`` bytes. Idempotent on (path, size, no backing file)."""
        if size <= 0:
            raise InvalidArgument(f"size {size} must be positive", details={"field": "size", "value": size})
        path = self.layout.volume_path(kind, account_uuid, volume_uuid)
        if path.exists():
            info = await qemuimg.info(path)
            if info.virtual_size != size or info.backing_filename:
                raise Conflict(
                    f"volume {path} exists with size {info.virtual_size} and backing "
                    f"{info.backing_filename!r}; asked size {size}",
                    details={"field": "volumeUuid", "value": volume_uuid},
                )
            return path
        async with Reverter() as r:
            r.add(files.remove_dirs, files.make_dirs(path.parent))
            tmp = partial_path(path)
            r.add(files.remove_file, tmp)
            await qemuimg.create(tmp, size=size)
            os.replace(tmp, path)
            r.success()
        return path

    async def create_from_file(self, kind: VolumeType, account_uuid: str, volume_uuid: str, source: Path) -> Path:
        """Volume = ``source`` (a volume or snapshot file of this storage) flattened with its backing chain into
        one self-contained qcow2 (``qemu-img convert``). Idempotent: an existing volume without backing file of
        the source's virtual size is kept."""
        src = self.layout.contain(source, "snapshotPath")
        info = await qemuimg.info(src, fmt="qcow2")
        path = self.layout.volume_path(kind, account_uuid, volume_uuid)
        if path.exists():
            have = await qemuimg.info(path)
            if have.virtual_size != info.virtual_size or have.backing_filename:
                raise Conflict(f"volume {path} exists and is not a copy of {src}",
                               details={"field": "volumeUuid", "value": volume_uuid})
            return path
        async with Reverter() as r:
            r.add(files.remove_dirs, files.make_dirs(path.parent))
            tmp = partial_path(path)
            r.add(files.remove_file, tmp)
            await qemuimg.convert(src, tmp, src_fmt="qcow2", dst_fmt="qcow2")
            os.replace(tmp, path)
            r.success()
        return path

    async def delete_volume(self, install_path: str) -> bool:
        """Delete the volume's whole directory (file and snapshots). A missing volume succeeds."""
        path = self.layout.contain(install_path, "installPath")
        vol_dir = path.parent
        if not (vol_dir.name.startswith("vol-") and vol_dir.parent.name.startswith("acct-")):
            raise InvalidArgument(
                f"installPath {install_path!r} is not a volume path of this storage",
                details={"field": "installPath", "value": install_path},
            )
        return await asyncio.to_thread(files.remove_tree, vol_dir)

    async def volume_sizes(self, install_path: str) -> tuple[int, int]:
        """(virtual size, allocated bytes) of a qcow2 volume this storage created, without running
        qemu-img (header read + stat); :meth:`volume_info` for anything else."""
        path = self.layout.contain(install_path, "installPath")

        def read() -> tuple[int | None, int]:
            return qemuimg.qcow2_virtual_size(path), files.allocated_bytes(path)

        try:
            virtual, allocated = await asyncio.to_thread(read)
        except FileNotFoundError:
            raise NotFound(
                f"volume {path} does not exist", details={"field": "installPath", "value": str(path)}
            ) from None
        if virtual is None:
            info = await self.volume_info(install_path)
            return info.virtual_size, info.actual_size
        return virtual, allocated

    async def volume_info(self, install_path: str) -> VolumeInfo:
        path = self.layout.contain(install_path, "installPath")
        if not path.is_file():
            raise NotFound(
                f"volume {path} does not exist", details={"field": "installPath", "value": str(path)}
            )
        chain = await qemuimg.backing_chain(path)
        top = chain[0]
        return VolumeInfo(
            path=path,
            format=top.format,
            virtual_size=top.virtual_size,
            actual_size=top.actual_size,
            backing_file=top.full_backing_filename,
            chain=[str(path)] + [c.full_backing_filename or "" for c in chain[:-1]],
        )

    async def delete_paths(self, paths: list[str]) -> list[str]:
        """Delete files inside the storage; missing files succeed. Returns the paths actually removed."""
        checked = [self.layout.contain(p) for p in paths]
        removed = []
        for p in checked:
            if p.is_dir():
                raise InvalidArgument(
                    f"path {p} is a directory; delete volumes with volume/delete",
                    details={"field": "paths", "value": str(p)},
                )
            if await asyncio.to_thread(files.remove_file, p):
                removed.append(str(p))
        return removed
