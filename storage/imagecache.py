"""The per-host image cache of a local primary storage.

An image is downloaded once per host and shared by every volume backed by it. Guarantees:

* concurrent requests for the same image on one host download it once (a lock per cache path);
* the file appears at its cache path only complete, checked (size/md5 when given) and inspected
  (:mod:`storage.inspect`: allowed format, self-contained); it is written as ``*.partial`` first;
* raw disk images are converted to qcow2 in the cache, so the cache of templates holds only qcow2;
* a sidecar ``<file>.json`` records the download's md5 and size and the cache file's own md5, so a
  repeated request is answered without re-reading the image, and a request whose md5 differs conflicts.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from storage import fetch, files, qemuimg
from storage.errors import ChecksumMismatch, Conflict, InvalidArgument
from storage.inspect import inspect_image
from storage.layout import LocalLayout, partial_path
from zsutil.imagecheck import USER_FORMATS
from zsutil.revert import Reverter


@dataclass(frozen=True)
class CachedImage:
    path: str
    format: str  # format of the cache file: qcow2 or iso
    md5: str  # md5 of the downloaded bytes
    size: int  # size of the downloaded bytes
    file_md5: str  # md5 of the cache file itself (differs from md5 when a raw image was converted)
    virtual_size: int
    actual_size: int


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_cached(path: Path) -> CachedImage | None:
    """The record of a complete cache file, or None when the file or its record is missing."""
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return None
    return CachedImage(**json.loads(side.read_text()))


class ImageCache:
    def __init__(self, layout: LocalLayout, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.layout = layout
        self._session = session
        self._locks: dict[Path, asyncio.Lock] = {}

    async def download(
        self,
        image_uuid: str,
        fmt: str,
        url: str | fetch.Source,
        *,
        md5: str | None = None,
        size: int | None = None,
    ) -> CachedImage:
        """Make the image available in this host's cache (idempotent; one download per image at a time)."""
        if fmt not in USER_FORMATS:
            raise InvalidArgument(
                f"format {fmt!r} is not allowed; allowed: {', '.join(USER_FORMATS)}",
                details={"field": "format", "value": fmt},
            )
        source = fetch.parse_source(url) if isinstance(url, str) else url
        path = self.layout.image_cache(image_uuid, fmt)
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            have = await asyncio.to_thread(read_cached, path)
            if have is not None:
                if md5 and md5.lower() != have.md5:
                    raise Conflict(
                        f"image {image_uuid} is cached at {path} with md5 {have.md5}, not {md5}",
                        details={"field": "md5", "value": md5, "cached": have.md5},
                    )
                return have
            return await self._download(path, fmt, source, md5=md5, size=size)

    async def _download(
        self, path: Path, fmt: str, source: fetch.Source, *, md5: str | None, size: int | None
    ) -> CachedImage:
        async with Reverter() as r:
            r.add(files.remove_dirs, files.make_dirs(path.parent))
            tmp = path.with_name(path.name + ".download" + ".partial")
            r.add(files.remove_file, tmp)
            got = await fetch.fetch(source, tmp, session=self._session())
            if size is not None and got.size != size:
                raise ChecksumMismatch(
                    f"download of image {path.stem}: size {got.size} != expected {size}",
                    details={"field": "size", "value": got.size, "expected": size},
                )
            if md5 and got.md5 != md5.lower():
                raise ChecksumMismatch(
                    f"download of image {path.stem}: md5 {got.md5} != expected {md5}",
                    details={"field": "md5", "value": got.md5, "expected": md5},
                )
            eff, _info = await inspect_image(tmp, expected=fmt)
            final_tmp = partial_path(path)
            r.add(files.remove_file, final_tmp)
            if eff == "raw":
                await qemuimg.convert(tmp, final_tmp, src_fmt="raw", dst_fmt="qcow2")
                files.remove_file(tmp)
                file_md5 = await asyncio.to_thread(files.file_digest, final_tmp, "md5")
            else:
                os.replace(tmp, final_tmp)
                file_md5 = got.md5
            info = await qemuimg.info(final_tmp)
            rec = CachedImage(
                path=str(path),
                format="iso" if eff == "iso" else "qcow2",
                md5=got.md5,
                size=got.size,
                file_md5=file_md5,
                virtual_size=info.virtual_size,
                actual_size=files.allocated_bytes(final_tmp),
            )
            os.replace(final_tmp, path)
            r.add(files.remove_file, path)
            side_tmp = partial_path(_sidecar(path))
            side_tmp.write_text(json.dumps(asdict(rec)))
            os.replace(side_tmp, _sidecar(path))
            await asyncio.to_thread(files.fsync_dir, path.parent)
            r.success()
        return rec
