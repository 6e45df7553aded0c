"""The image safety checks, one copy for both sides (issue #18): the agent (``storage.inspect``, images on a
host) and the controller (``controller.backup.inspect``, images on an SFTP backup storage, over SSH).

An image that comes from a user must be *self-contained*: one of the allowed formats (qcow2, raw, iso), no
backing file, no external data file, no ``json:`` pseudo-protocol name anywhere. Images the storage built
itself (volumes, snapshots) may have a backing chain, but every link must be an absolute path inside the
storage's roots. Two pure checks, driven by the unit tests with canned input:

* :func:`check_header` over the file's first :data:`HEADER_BYTES` bytes, BEFORE qemu-img ever runs: qcow2
  v2/v3 without backing file, data file or encryption; no other format's magic. It returns the format to
  tell qemu-img (no probing).
* :func:`check_info` over the parsed ``qemu-img info --output=json`` (:class:`ImageInfo`).

Both raise :class:`ImageRejected` (a coded error naming the field and the value); each side raises it as its
own error type (``storage.errors.UnsafeImage``, the controller's ``UnsafeImage``).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsutil.errors import CodedError

#: Formats a user may upload. ``iso`` is what qemu calls ``raw`` plus an ISO 9660 signature.
USER_FORMATS = ("qcow2", "raw", "iso")
ISO_MAGIC_OFFSET = 0x8001
ISO_MAGIC = b"CD001"
#: Magic numbers of formats a user may not upload; qemu's probing of them can open other files (a VMDK
#: descriptor names its extents) or need secrets, so they are refused before qemu-img ever sees the file.
FOREIGN_MAGICS = ((b"KDMV", "vmdk"), (b"# Disk DescriptorFile", "vmdk descriptor"), (b"vhdxfile", "vhdx"),
                  (b"conectix", "vpc"), (b"QED\x00", "qed"), (b"LUKS\xba\xbe", "luks"),
                  (b"<<< ", "vdi"), (b"WithoutFreeSpace", "parallels"), (b"WithouFreSpacExt", "parallels"),
                  (b"Bochs Virtual HD Image", "bochs"), (b"cloop", "cloop"), (b"QEVM", "qemu-savevm"))
HEADER_BYTES = ISO_MAGIC_OFFSET + len(ISO_MAGIC)
_QCOW2 = b"QFI\xfb"


class ImageRejected(CodedError):
    status = 400
    code = "IMAGE.UNSAFE"

    def __init__(self, message: str, *, details: dict[str, Any]) -> None:
        super().__init__(None, message, details=details)


@dataclass(frozen=True)
class ImageInfo:
    """The fields of ``qemu-img info --output=json`` the checks and the data plane rely on."""

    filename: str
    format: str
    virtual_size: int
    actual_size: int
    backing_filename: str | None = None
    full_backing_filename: str | None = None
    backing_format: str | None = None
    data_file: str | None = None
    corrupt: bool = False
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageInfo:
        spec = (d.get("format-specific") or {}).get("data") or {}
        return cls(
            filename=str(d.get("filename", "")),
            format=str(d.get("format", "")),
            virtual_size=int(d.get("virtual-size", 0)),
            actual_size=int(d.get("actual-size", 0)),
            backing_filename=d.get("backing-filename"),
            full_backing_filename=d.get("full-backing-filename"),
            backing_format=d.get("backing-filename-format"),
            data_file=spec.get("data-file"),
            corrupt=bool(spec.get("corrupt", False)),
            raw=d,
        )


def has_iso_signature(head: bytes) -> bool:
    """True when ``head`` (at least :data:`HEADER_BYTES` long) carries the ISO 9660 signature."""
    return head[ISO_MAGIC_OFFSET:ISO_MAGIC_OFFSET + len(ISO_MAGIC)] == ISO_MAGIC


def _declared_mismatch(image: str, expected: str, actual: str) -> ImageRejected:
    return ImageRejected(f"invalid field[format]: image {image} was declared {expected!r} but the file is {actual!r}",
                         details={"field": "format", "value": actual, "expected": expected})


def check_header(head: bytes, *, image: str, expected: str | None, self_contained: bool = True) -> str:
    """The format qemu-img must be told (``qcow2`` or ``raw``) from the file's first :data:`HEADER_BYTES` bytes,
    checked BEFORE any qemu-img call: a qcow2 magic with version 2/3, no encryption, and (``self_contained``)
    no backing file and no external data file; anything with another format's magic is refused; the rest is
    raw (``iso`` when the ISO 9660 signature is there)."""
    if head.startswith(_QCOW2):
        if len(head) < 104:
            raise ImageRejected(f"image {image}: truncated qcow2 header",
                                details={"field": "header", "value": len(head)})
        version, backing_off, backing_len = struct.unpack_from(">IQI", head, 4)
        crypt = struct.unpack_from(">I", head, 32)[0]
        if version not in (2, 3):
            raise ImageRejected(f"image {image}: qcow2 version {version} is not 2 or 3",
                                details={"field": "version", "value": version})
        if crypt:
            raise ImageRejected(f"image {image}: the qcow2 is encrypted (crypt_method {crypt})",
                                details={"field": "crypt_method", "value": crypt})
        if self_contained and (backing_off or backing_len):
            raw = head[backing_off:backing_off + backing_len] if backing_off + backing_len <= len(head) else b""
            check_reference("backing-filename", raw.decode(errors="replace") or f"(header offset {backing_off})",
                            image=image, roots=())
        incompatible = struct.unpack_from(">Q", head, 72)[0] if version == 3 else 0
        if self_contained and incompatible & 0x4:
            check_reference("data-file", "(external data file bit)", image=image, roots=())
        if expected in ("raw", "iso"):
            raise _declared_mismatch(image, expected, "qcow2")
        return "qcow2"
    for magic, name in FOREIGN_MAGICS:
        if head.startswith(magic):
            raise ImageRejected(f"image {image}: the file is {name!r}; allowed: {', '.join(USER_FORMATS)}",
                                details={"field": "format", "value": name})
    if expected == "qcow2":
        raise ImageRejected(f"invalid field[format]: image {image} was declared 'qcow2' but the file has no qcow2 "
                            "header", details={"field": "format", "value": "raw", "expected": expected})
    return "raw"


def _inside(path: str, roots: Sequence[Path]) -> bool:
    real = os.path.realpath(path)
    return any(real == str(r) or real.startswith(str(r).rstrip("/") + "/") for r in roots)


def check_reference(field: str, value: str | None, *, image: str, roots: Sequence[Path]) -> None:
    """A backing/data-file reference must be absent, or (for storage-made images) an absolute path in roots."""
    if not value:
        return
    if value.startswith("json:"):
        raise ImageRejected(
            f"image {image}: field {field!r} uses the json: pseudo-protocol ({value[:120]!r}); "
            "an image may only reference plain files",
            details={"field": field, "value": value},
        )
    if not roots:
        raise ImageRejected(
            f"image {image}: field {field!r} = {value!r} points outside the image; images "
            "from users must be self-contained (no backing file, no external data file)",
            details={"field": field, "value": value},
        )
    if not value.startswith("/") or not _inside(value, roots):
        raise ImageRejected(
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
        raise ImageRejected(
            f"image {image}: format {expected!r} is not allowed; allowed: {', '.join(USER_FORMATS)}",
            details={"field": "format", "value": expected},
        )
    fmt = info.format
    if fmt not in ("qcow2", "raw"):
        raise ImageRejected(
            f"image {image}: qemu-img detected format {fmt!r}; allowed: {', '.join(USER_FORMATS)}",
            details={"field": "format", "value": fmt},
        )
    effective = "iso" if fmt == "raw" and iso_signature else fmt
    if expected is not None and expected != effective and not (expected == "raw" and effective == "iso"):
        raise _declared_mismatch(image, expected, effective)
    for fld, val in (
        ("filename", info.filename if info.filename.startswith("json:") else None),
        ("backing-filename", info.backing_filename),
        ("full-backing-filename", info.full_backing_filename),
        ("data-file", info.data_file),
    ):
        check_reference(fld, val, image=image, roots=allowed_roots)
    if info.corrupt:
        raise ImageRejected(
            f"image {image}: qcow2 is marked corrupt", details={"field": "corrupt", "value": True}
        )
    if info.virtual_size <= 0:
        raise ImageRejected(
            f"image {image}: virtual-size {info.virtual_size} is not positive",
            details={"field": "virtual-size", "value": info.virtual_size},
        )
    return "raw" if expected == "raw" and effective == "iso" else effective
