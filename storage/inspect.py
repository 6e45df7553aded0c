"""Safety inspection of images before qemu-img does anything else with them.

An image that comes from a user (a download into the image cache, a file named by ``/image/inspect``) must
be *self-contained*: one of the allowed formats (qcow2, raw, iso), no backing file, no external data file,
no ``json:`` pseudo-protocol name anywhere. Images the storage built itself (volumes, snapshots) may have a
backing chain, but every link must be an absolute path inside the storage's roots.

:func:`inspect_image` first checks the file's header and magic (:func:`check_header`: qcow2 v2/v3 without
backing file, data file or encryption, no other format's magic; no qemu-img yet), then runs ``qemu-img info
--output=json -f <that format>`` under resource limits (no format probing) and then :func:`check_info`, a
pure function over the parsed info. Both checks are ``zsutil.imagecheck``'s (the controller checks images on
the backup storage with the same code). Errors raise :class:`UnsafeImage` naming the field and value.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

from storage import qemuimg
from storage.errors import UnsafeImage
from zsutil import imagecheck
from zsutil.imagecheck import HEADER_BYTES, ISO_MAGIC, ISO_MAGIC_OFFSET, ImageInfo


def is_iso_file(path: str | os.PathLike[str]) -> bool:
    """True when the file carries the ISO 9660 primary volume descriptor signature."""
    try:
        with open(path, "rb") as f:
            f.seek(ISO_MAGIC_OFFSET)
            return f.read(len(ISO_MAGIC)) == ISO_MAGIC
    except OSError:
        return False


def check_header(head: bytes, *, image: str, expected: str | None, self_contained: bool = True) -> str:
    """:func:`zsutil.imagecheck.check_header`, refusals raised as :class:`UnsafeImage`."""
    try:
        return imagecheck.check_header(head, image=image, expected=expected, self_contained=self_contained)
    except imagecheck.ImageRejected as e:
        raise UnsafeImage(e.message, details=e.details) from None


def check_info(info: ImageInfo, *, image: str, expected: str | None = None, iso_signature: bool = False,
               allowed_roots: Sequence[Path] = ()) -> str:
    """:func:`zsutil.imagecheck.check_info`, refusals raised as :class:`UnsafeImage`."""
    try:
        return imagecheck.check_info(info, image=image, expected=expected, iso_signature=iso_signature,
                                     allowed_roots=allowed_roots)
    except imagecheck.ImageRejected as e:
        raise UnsafeImage(e.message, details=e.details) from None


def _read_head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEADER_BYTES)


async def inspect_image(
    path: str | os.PathLike[str], *, expected: str | None = None, allowed_roots: Sequence[Path] = ()
) -> tuple[str, ImageInfo]:
    """Inspect a file on this host; return (effective format, info). Raises :class:`UnsafeImage`.

    The path must be absolute and must not itself be a ``json:`` name; qemu probes the format (never
    trusting the caller's claim), then :func:`check_info` decides."""
    p = os.fspath(path)
    if p.startswith("json:") or not p.startswith("/"):
        raise UnsafeImage(
            f"image path {p!r} must be an absolute file path (no json:/protocol names)",
            details={"field": "path", "value": p},
        )
    if not os.path.isfile(p):  # noqa: ASYNC240
        raise UnsafeImage(f"image {p} is not a regular file", details={"field": "path", "value": p})
    probed = check_header(await asyncio.to_thread(_read_head, p), image=p, expected=expected,
                          self_contained=not allowed_roots)
    info = await qemuimg.info(p, fmt=probed, force_share=True)
    fmt = check_info(
        info,
        image=p,
        expected=expected,
        iso_signature=is_iso_file(p),
        allowed_roots=[Path(os.path.realpath(r)) for r in allowed_roots],  # noqa: ASYNC240
    )
    return fmt, info
