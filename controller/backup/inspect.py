"""Image inspection ON the backup storage host: ``qemu-img info --output=json`` over SSH, then checks.

The header and magic are checked first, over SFTP (:func:`check_header`), so qemu-img never probes an
unchecked file; then the controller has the storage host run qemu-img with that format, under ``prlimit``
(30 s of CPU, 1 GiB of address space) so a hostile header cannot exhaust it. The checks mirror the agent's
``storage/inspect.py`` (the controller may not import it): an uploaded image must be self-contained —
format qcow2 or raw (``iso`` = raw with an ISO 9660 signature), no backing file, no external data file,
no ``json:`` pseudo-protocol name, not marked corrupt, a positive virtual size, and the declared format
must match what qemu detects. Any violation raises :class:`UnsafeImage` naming the field and value.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import asyncssh

from controller.backup.sftp import execute
from controller.errors import InvalidArgument

LIMITS = ["prlimit", "--cpu=30", "--as=1073741824"]
ISO_MAGIC_OFFSET = 0x8001
ISO_MAGIC = b"CD001"


class UnsafeImage(InvalidArgument):
    """The downloaded file is not an acceptable image (400, SYS.1007)."""


@dataclass(frozen=True)
class Inspected:
    format: str  # qcow2, raw or iso
    virtual_size: int


def _reference(field: str, value: Any, url: str) -> None:
    if not value:
        return
    if str(value).startswith("json:"):
        raise UnsafeImage(f"image {url}: field {field!r} uses the json: pseudo-protocol ({str(value)[:120]!r}); "
                          "an image may only reference plain files")
    raise UnsafeImage(f"image {url}: field {field!r} = {value!r} points outside the image; images must be "
                      "self-contained (no backing file, no external data file)")


def check_info(info: dict[str, Any], *, url: str, declared: str, iso_signature: bool) -> Inspected:
    """Validate parsed ``qemu-img info`` JSON of an uploaded image; pure, so unit tests drive it."""
    fmt = info.get("format")
    if fmt not in ("qcow2", "raw"):
        raise UnsafeImage(f"image {url}: qemu-img detected format {fmt!r}; allowed: qcow2, raw, iso")
    data = (info.get("format-specific") or {}).get("data") or {}
    filename = str(info.get("filename", ""))
    for field, value in (("filename", filename if filename.startswith("json:") else None),
                         ("backing-filename", info.get("backing-filename")),
                         ("full-backing-filename", info.get("full-backing-filename")),
                         ("data-file", data.get("data-file"))):
        _reference(field, value, url)
    if data.get("corrupt"):
        raise UnsafeImage(f"image {url}: the qcow2 is marked corrupt")
    size = int(info.get("virtual-size") or 0)
    if size <= 0:
        raise UnsafeImage(f"image {url}: virtual-size {size} is not positive")
    effective = "iso" if fmt == "raw" and iso_signature else fmt
    if declared == "raw" and effective == "iso":
        effective = "raw"
    if declared != effective:
        raise UnsafeImage(f"invalid field[format]: the image {url} was declared {declared!r} but the file is "
                          f"{effective!r}")
    return Inspected(effective, size)


#: other formats' magic numbers (qemu's probing of them may open other files): refused before qemu-img runs.
#: The same table and rules as ``storage.inspect.check_header`` (the controller may not import ``storage``).
FOREIGN_MAGICS = ((b"KDMV", "vmdk"), (b"# Disk DescriptorFile", "vmdk descriptor"), (b"vhdxfile", "vhdx"),
                  (b"conectix", "vpc"), (b"QED\x00", "qed"), (b"LUKS\xba\xbe", "luks"), (b"<<< ", "vdi"),
                  (b"WithoutFreeSpace", "parallels"), (b"WithouFreSpacExt", "parallels"),
                  (b"Bochs Virtual HD Image", "bochs"), (b"cloop", "cloop"), (b"QEVM", "qemu-savevm"))
HEADER_BYTES = ISO_MAGIC_OFFSET + len(ISO_MAGIC)


def check_header(head: bytes, *, url: str, declared: str) -> str:
    """The format to tell qemu-img (``qcow2``/``raw``) from the first bytes, checked before qemu-img runs:
    qcow2 v2/v3, unencrypted, no backing file, no external data file; no other format's magic."""
    if head.startswith(b"QFI\xfb"):
        if len(head) < 104:
            raise UnsafeImage(f"image {url}: truncated qcow2 header")
        version, backing_off, backing_len = struct.unpack_from(">IQI", head, 4)
        if version not in (2, 3) or struct.unpack_from(">I", head, 32)[0]:
            raise UnsafeImage(f"image {url}: qcow2 version {version} or encryption is not allowed")
        if backing_off or backing_len:
            raw = head[backing_off:backing_off + backing_len] if backing_off + backing_len <= len(head) else b""
            _reference("backing-filename", raw.decode(errors="replace") or f"(header offset {backing_off})", url)
        if version == 3 and struct.unpack_from(">Q", head, 72)[0] & 0x4:
            _reference("data-file", "(external data file bit)", url)
        if declared != "qcow2":
            raise UnsafeImage(f"invalid field[format]: the image {url} was declared {declared!r} but the file is "
                              "'qcow2'")
        return "qcow2"
    for magic, name in FOREIGN_MAGICS:
        if head.startswith(magic):
            raise UnsafeImage(f"image {url}: the file is {name!r}; allowed: qcow2, raw, iso")
    if declared == "qcow2":
        raise UnsafeImage(f"invalid field[format]: the image {url} was declared 'qcow2' but the file has no qcow2 "
                          "header")
    return "raw"


async def _head(sftp: asyncssh.SFTPClient, path: str) -> bytes:
    async with sftp.open(path, "rb") as f:
        data: bytes | str = await f.read(HEADER_BYTES)
        return data if isinstance(data, bytes) else data.encode()


async def inspect_remote(conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, path: str, *,
                         url: str, declared: str) -> Inspected:
    """Check the header (over SFTP), then run qemu-img info with that format on the storage host (limits
    applied) and check the result."""
    head = await _head(sftp, path)
    fmt = check_header(head, url=url, declared=declared)
    iso = head[ISO_MAGIC_OFFSET:ISO_MAGIC_OFFSET + len(ISO_MAGIC)] == ISO_MAGIC
    out = await execute(conn, [*LIMITS, "qemu-img", "info", "--output=json", "-U", "-f", fmt, path], timeout=60)
    try:
        info = json.loads(out)
    except ValueError as e:
        raise UnsafeImage(f"image {url}: qemu-img info printed no JSON ({out[:200]!r})") from e
    return check_info(info, url=url, declared=declared, iso_signature=iso)
