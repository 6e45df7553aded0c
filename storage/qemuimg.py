"""Typed wrappers over ``qemu-img``; every call goes through :func:`zsutil.runner.run`.

Conventions: paths are absolute (so qemu never parses a ``proto:`` prefix out of them); ``info`` always
uses ``--output=json`` under :data:`QEMU_IMG_INFO_LIMITS`; ``-U`` (force share) is used for reads of
images that a running VM may hold open. A failed qemu-img raises :class:`QemuImgError` carrying argv, rc
and stderr. Call :func:`storage.inspect.inspect_image` before any other call on a user-supplied image.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from storage.errors import StorageError
from zsutil.imagecheck import ImageInfo
from zsutil.runner import QEMU_IMG_INFO_LIMITS, ProcessError, run

QEMU_IMG = "qemu-img"
INFO_TIMEOUT = 60.0
SHORT_TIMEOUT = 120.0
LONG_TIMEOUT = 6 * 3600.0


class QemuImgError(StorageError):
    code = "STORAGE.QEMU_IMG_FAILED"


@dataclass(frozen=True)
class Extent:
    """One entry of ``qemu-img map --output=json`` (guest-visible ranges)."""

    start: int
    length: int
    data: bool
    zero: bool
    depth: int = 0
    offset: int | None = None


def _abs(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not p.startswith("/"):
        raise StorageError(f"qemu-img path must be absolute, got {p!r}", code="STORAGE.INVALID_ARGUMENT")
    return p


async def _qemu_img(
    args: list[str], *, time_limit: float, limits: Any = None, ok_codes: tuple[int, ...] = (0,)
) -> str:
    argv = [QEMU_IMG, *args]
    try:
        res = await run(argv, timeout=time_limit, limits=limits, ok_codes=ok_codes)
    except ProcessError as e:
        raise QemuImgError(
            str(e), details={"argv": list(e.argv), "rc": e.rc, "stderr": e.stderr[-2000:]}
        ) from e
    return res.stdout


async def info(
    path: str | os.PathLike[str], *, fmt: str | None = None, force_share: bool = True
) -> ImageInfo:
    """``qemu-img info`` of one file, under resource limits. ``fmt=None`` lets qemu probe the format."""
    args = ["info", "--output=json"]
    if force_share:
        args.append("-U")
    if fmt:
        args += ["-f", fmt]
    out = await _qemu_img([*args, _abs(path)], time_limit=INFO_TIMEOUT, limits=QEMU_IMG_INFO_LIMITS)
    return ImageInfo.from_json(json.loads(out))


#: qcow2 header start (qcow2 spec, all big-endian): magic, version, backing_file_offset, backing_file_size,
#: cluster_bits, size (the virtual size).
_QCOW2_HEAD = struct.Struct(">4sIQIIQ")
QCOW2_MAGIC = b"QFI\xfb"


def qcow2_virtual_size(path: str | os.PathLike[str]) -> int | None:
    """The virtual size field of a qcow2 header, or None when the file is not qcow2. Only for volumes this
    storage created itself (a cheap read instead of a ``qemu-img info`` process per reply); never for
    user-supplied images, which go through :func:`storage.inspect.inspect_image`. Blocking."""
    with open(path, "rb") as f:
        head = f.read(_QCOW2_HEAD.size)
    if len(head) < _QCOW2_HEAD.size:
        return None
    magic, _version, _bfo, _bfs, _cluster_bits, size = _QCOW2_HEAD.unpack(head)
    return int(size) if magic == QCOW2_MAGIC else None


async def backing_chain(path: str | os.PathLike[str], *, force_share: bool = True) -> list[ImageInfo]:
    """``info --backing-chain``: the image first, then each backing file down to the base.

    Only for images already in the storage (their chain was checked when they were made)."""
    args = ["info", "--output=json", "--backing-chain"] + (["-U"] if force_share else [])
    out = await _qemu_img([*args, _abs(path)], time_limit=INFO_TIMEOUT, limits=QEMU_IMG_INFO_LIMITS)
    return [ImageInfo.from_json(d) for d in json.loads(out)]


async def create(
    path: str | os.PathLike[str],
    *,
    size: int | None = None,
    fmt: str = "qcow2",
    backing: str | os.PathLike[str] | None = None,
    backing_fmt: str | None = None,
    unsafe: bool = False,
) -> None:
    """Create an image: empty of ``size`` bytes, or an overlay on ``backing`` (``-F backing_fmt`` required).
    ``unsafe`` (``-u``): the backing file is not opened (it may be locked by a running QEMU); ``size`` is
    then required."""
    args = ["create", "-q", "-f", fmt]
    if backing is not None:
        if not backing_fmt:
            raise StorageError(
                "qemu-img create with a backing file needs backing_fmt", code="STORAGE.INTERNAL"
            )
        if unsafe and size is None:
            raise StorageError("qemu-img create -u needs a size", code="STORAGE.INTERNAL")
        args += ["-u"] if unsafe else []
        args += ["-b", _abs(backing), "-F", backing_fmt]
    elif size is None:
        raise StorageError("qemu-img create needs a size or a backing file", code="STORAGE.INTERNAL")
    args.append(_abs(path))
    if size is not None:
        args.append(str(size))
    await _qemu_img(args, time_limit=SHORT_TIMEOUT)


async def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    src_fmt: str,
    dst_fmt: str = "qcow2",
    time_limit: float = LONG_TIMEOUT,
) -> None:
    args = ["convert", "-q", "-f", src_fmt, "-O", dst_fmt, _abs(src), _abs(dst)]
    await _qemu_img(args, time_limit=time_limit)


async def rebase(
    path: str | os.PathLike[str],
    *,
    backing: str | os.PathLike[str] | None,
    backing_fmt: str | None = "qcow2",
    safe: bool = True,
    time_limit: float = LONG_TIMEOUT,
) -> None:
    """Point ``path`` at ``backing`` (``None`` = no backing file).

    Safe mode first copies into ``path`` every cluster whose content differs between the old and the new
    backing chain, so the guest-visible content is unchanged; unsafe mode (``-u``) only rewrites the
    header and is correct only when both chains present identical content."""
    args = ["rebase", "-q", "-f", "qcow2"] + ([] if safe else ["-u"])
    if backing is None:
        args += ["-b", ""]
    else:
        args += ["-b", _abs(backing), "-F", backing_fmt or "qcow2"]
    await _qemu_img([*args, _abs(path)], time_limit=time_limit)


async def resize(path: str | os.PathLike[str], size: int, *, fmt: str = "qcow2") -> None:
    await _qemu_img(["resize", "-q", "-f", fmt, _abs(path), str(size)], time_limit=SHORT_TIMEOUT)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    check_errors: int
    leaks: int
    corruptions: int
    raw: dict[str, Any]


async def check(path: str | os.PathLike[str], *, fmt: str = "qcow2") -> CheckResult:
    """``qemu-img check``; rc 0 = clean, 2 = corruptions, 3 = leaks only (both reported, not raised)."""
    out = await _qemu_img(
        ["check", "--output=json", "-U", "-f", fmt, _abs(path)], time_limit=LONG_TIMEOUT, ok_codes=(0, 2, 3)
    )
    d = json.loads(out) if out.strip() else {}
    errors = int(d.get("check-errors", 0))
    corruptions = int(d.get("corruptions", 0))
    leaks = int(d.get("leaks", 0))
    return CheckResult(
        ok=errors == 0 and corruptions == 0, check_errors=errors, leaks=leaks, corruptions=corruptions, raw=d
    )


async def commit(
    path: str | os.PathLike[str], *, fmt: str = "qcow2", drop: bool = False, time_limit: float = LONG_TIMEOUT
) -> None:
    """Merge ``path`` into its backing file (``-d``: leave ``path`` as is instead of emptying it)."""
    args = ["commit", "-q", "-f", fmt] + (["-d"] if drop else []) + [_abs(path)]
    await _qemu_img(args, time_limit=time_limit)


async def map_extents(path: str | os.PathLike[str], *, fmt: str = "qcow2") -> list[Extent]:
    """Guest-visible allocation map (``qemu-img map --output=json``)."""
    out = await _qemu_img(["map", "--output=json", "-U", "-f", fmt, _abs(path)], time_limit=LONG_TIMEOUT)
    return [
        Extent(
            start=int(e["start"]),
            length=int(e["length"]),
            data=bool(e.get("data")),
            zero=bool(e.get("zero")),
            depth=int(e.get("depth", 0)),
            offset=e.get("offset"),
        )
        for e in json.loads(out)
    ]
