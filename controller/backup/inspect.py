"""Image inspection ON the backup storage host: ``qemu-img info --output=json`` over SSH, then checks.

The controller never runs qemu-img itself; the storage host does, under ``prlimit`` (30 s of CPU, 1 GiB
of address space) so a hostile header cannot exhaust it. The checks mirror the agent's
``storage/inspect.py`` (the controller may not import it): an uploaded image must be self-contained —
format qcow2 or raw (``iso`` = raw with an ISO 9660 signature), no backing file, no external data file,
no ``json:`` pseudo-protocol name, not marked corrupt, a positive virtual size, and the declared format
must match what qemu detects. Any violation raises :class:`UnsafeImage` naming the field and value.
"""

from __future__ import annotations

import json
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


async def _iso_signature(sftp: asyncssh.SFTPClient, path: str) -> bool:
    async with sftp.open(path, "rb") as f:
        await f.seek(ISO_MAGIC_OFFSET)
        data: bytes | str = await f.read(len(ISO_MAGIC))
        return data == ISO_MAGIC


async def inspect_remote(conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, path: str, *,
                         url: str, declared: str) -> Inspected:
    """Run qemu-img info on the storage host (limits applied) and check the result."""
    out = await execute(conn, [*LIMITS, "qemu-img", "info", "--output=json", "-U", path], timeout=60)
    try:
        info = json.loads(out)
    except ValueError as e:
        raise UnsafeImage(f"image {url}: qemu-img info printed no JSON ({out[:200]!r})") from e
    return check_info(info, url=url, declared=declared, iso_signature=await _iso_signature(sftp, path))
