"""Safety inspection of images before qemu-img does anything else with them.

An image that comes from a user (a download into the image cache, a file named by ``/image/inspect``) must
be *self-contained*: one of the allowed formats (qcow2, raw, iso), no backing file, no external data file,
no ``json:`` pseudo-protocol name anywhere. Images the storage built itself (volumes, snapshots) may have a
backing chain, but every link must be an absolute path inside the storage's roots.

:func:`inspect_image` first checks the file's header and magic (:func:`check_header`: qcow2 v2/v3 without
backing file, data file or encryption, no other format's magic; no qemu-img yet), then runs ``qemu-img info
--output=json -f <that format>`` under resource limits (no format probing) and then :func:`check_info`, a
pure function over the parsed info
that the unit tests drive with canned JSON. Errors raise :class:`UnsafeImage` naming the field and value.
"""

from __future__ import annotations

import asyncio
import os
import struct
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


#: Magic numbers of formats a user may not upload; qemu's probing of them can open other files (a VMDK
#: descriptor names its extents) or need secrets, so they are refused before qemu-img ever sees the file.
FOREIGN_MAGICS = ((b"KDMV", "vmdk"), (b"# Disk DescriptorFile", "vmdk descriptor"), (b"vhdxfile", "vhdx"),
                  (b"conectix", "vpc"), (b"QED\x00", "qed"), (b"LUKS\xba\xbe", "luks"),
                  (b"<<< ", "vdi"), (b"WithoutFreeSpace", "parallels"), (b"WithouFreSpacExt", "parallels"),
                  (b"Bochs Virtual HD Image", "bochs"), (b"cloop", "cloop"), (b"QEVM", "qemu-savevm"))
HEADER_BYTES = ISO_MAGIC_OFFSET + len(ISO_MAGIC)
_QCOW2 = b"QFI\xfb"


def check_header(head: bytes, *, image: str, expected: str | None, self_contained: bool = True) -> str:
    """The format qemu-img must be told (``qcow2`` or ``raw``) from the file's first :data:`HEADER_BYTES` bytes,
    checked BEFORE any qemu-img call: a qcow2 magic with version 2/3, no encryption, and (``self_contained``)
    no backing file and no external data file; anything with another format's magic is refused; the rest is
    raw (``iso`` when the ISO 9660 signature is there). Pure, so unit tests drive it with canned headers."""
    if head.startswith(_QCOW2):
        if len(head) < 104:
            raise UnsafeImage(f"image {image}: truncated qcow2 header", details={"field": "header", "value": len(head)})
        version, backing_off, backing_len = struct.unpack_from(">IQI", head, 4)
        crypt = struct.unpack_from(">I", head, 32)[0]
        if version not in (2, 3):
            raise UnsafeImage(f"image {image}: qcow2 version {version} is not 2 or 3",
                              details={"field": "version", "value": version})
        if crypt:
            raise UnsafeImage(f"image {image}: the qcow2 is encrypted (crypt_method {crypt})",
                              details={"field": "crypt_method", "value": crypt})
        if self_contained and (backing_off or backing_len):
            raw = head[backing_off:backing_off + backing_len] if backing_off + backing_len <= len(head) else b""
            _check_reference("backing-filename", raw.decode(errors="replace") or f"(header offset {backing_off})",
                             image=image, roots=())
        incompatible = struct.unpack_from(">Q", head, 72)[0] if version == 3 else 0
        if self_contained and incompatible & 0x4:
            _check_reference("data-file", "(external data file bit)", image=image, roots=())
        if expected in ("raw", "iso"):
            raise UnsafeImage(f"image {image}: declared format {expected!r} but the file is 'qcow2'",
                              details={"field": "format", "value": "qcow2", "expected": expected})
        return "qcow2"
    for magic, name in FOREIGN_MAGICS:
        if head.startswith(magic):
            raise UnsafeImage(f"image {image}: the file is {name!r}; allowed: {', '.join(USER_FORMATS)}",
                              details={"field": "format", "value": name})
    if expected == "qcow2":
        raise UnsafeImage(f"image {image}: declared format 'qcow2' but the file has no qcow2 header",
                          details={"field": "format", "value": "raw", "expected": expected})
    return "raw"


def _read_head(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEADER_BYTES)


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
