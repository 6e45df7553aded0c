"""Safety inspection of images before qemu-img does anything else with them.

An image that comes from a user (a download into the image cache, a file named by ``/image/inspect``) must
be *self-contained*: one of the allowed formats (qcow2, raw, iso), no backing file, no external data file,
no ``json:`` pseudo-protocol name anywhere. Images the storage built itself (volumes, snapshots) may have a
backing chain, but every link must be an absolute path inside the storage's roots.

:func:`inspect_image` runs ``qemu-img info --output=json`` under resource limits (the first and only
qemu-img call made on an unchecked file) and then :func:`check_info`, a pure function over the parsed info
that the unit tests drive with canned JSON. Errors raise :class:`UnsafeImage` naming the field and value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from storage import qemuimg
from storage.errors import UnsafeImage
from storage.qemuimg import ImageInfo

#: Formats a user may upload. ``iso`` is what qemu calls ``raw`` plus an ISO 9660 signature.
USER_FORMATS = ("qcow2", "raw", "iso")
ISO_MAGIC_OFFSET = 0x8001
ISO_MAGIC = b"CD001"


def is_iso_file(path: str | os.PathLike[str]) -> bool:
    """True when the file carries the ISO 9660 primary volume descriptor signature."""
    try:
        with open(path, "rb") as f:
            f.seek(ISO_MAGIC_OFFSET)
            return f.read(len(ISO_MAGIC)) == ISO_MAGIC
    except OSError:
        return False


def _inside(path: str, roots: Sequence[Path]) -> bool:
    real = os.path.realpath(path)
    return any(real == str(r) or real.startswith(str(r).rstrip("/") + "/") for r in roots)


def _check_reference(field: str, value: str | None, *, image: str, roots: Sequence[Path]) -> None:
    """A backing/data-file reference must be absent, or (for storage-made images) an absolute path in roots."""
    if not value:
        return
    if value.startswith("json:"):
        raise UnsafeImage(
            f"image {image}: field {field!r} uses the json: pseudo-protocol ({value[:120]!r}); "
            "an image may only reference plain files",
            details={"field": field, "value": value},
        )
    if not roots:
        raise UnsafeImage(
            f"image {image}: field {field!r} = {value!r} points outside the image; images "
            "from users must be self-contained (no backing file, no external data file)",
            details={"field": field, "value": value},
        )
    if not value.startswith("/") or not _inside(value, roots):
        raise UnsafeImage(
            f"image {image}: field {field!r} = {value!r} is not a file inside the storage "
            f"({', '.join(map(str, roots))})",
            details={"field": field, "value": value},
        )


def check_info(
    info: ImageInfo,
    *,
    image: str,
    expected: str | None = None,
    iso_signature: bool = False,
    allowed_roots: Sequence[Path] = (),
) -> str:
    """Validate parsed ``qemu-img info`` and return the effective format (``qcow2``, ``raw`` or ``iso``).

    ``expected`` (one of :data:`USER_FORMATS` or None) is what the caller claims the image is;
    ``iso_signature`` tells whether the file carries an ISO 9660 signature; ``allowed_roots`` empty means
    the image must be self-contained."""
    if expected is not None and expected not in USER_FORMATS:
        raise UnsafeImage(
            f"image {image}: format {expected!r} is not allowed; allowed: {', '.join(USER_FORMATS)}",
            details={"field": "format", "value": expected},
        )
    fmt = info.format
    if fmt not in ("qcow2", "raw"):
        raise UnsafeImage(
            f"image {image}: qemu-img detected format {fmt!r}; allowed: {', '.join(USER_FORMATS)}",
            details={"field": "format", "value": fmt},
        )
    effective = "iso" if fmt == "raw" and iso_signature else fmt
    if expected is not None and expected != effective and not (expected == "raw" and effective == "iso"):
        raise UnsafeImage(
            f"image {image}: declared format {expected!r} but the file is {effective!r}",
            details={"field": "format", "value": effective, "expected": expected},
        )
    for fld, val in (
        ("filename", info.filename if info.filename.startswith("json:") else None),
        ("backing-filename", info.backing_filename),
        ("full-backing-filename", info.full_backing_filename),
        ("data-file", info.data_file),
    ):
        _check_reference(fld, val, image=image, roots=allowed_roots)
    if info.corrupt:
        raise UnsafeImage(
            f"image {image}: qcow2 is marked corrupt", details={"field": "corrupt", "value": True}
        )
    if info.virtual_size <= 0:
        raise UnsafeImage(
            f"image {image}: virtual-size {info.virtual_size} is not positive",
            details={"field": "virtual-size", "value": info.virtual_size},
        )
    return "raw" if expected == "raw" and effective == "iso" else effective


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
    info = await qemuimg.info(p, force_share=True)
    fmt = check_info(
        info,
        image=p,
        expected=expected,
        iso_signature=is_iso_file(p),
        allowed_roots=[Path(os.path.realpath(r)) for r in allowed_roots],  # noqa: ASYNC240
    )
    return fmt, info
