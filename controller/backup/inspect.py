"""Image inspection ON the backup storage host: ``qemu-img info --output=json`` over SSH, then checks.

The header and magic are checked first, over SFTP (:func:`check_header`), so qemu-img never probes an
unchecked file; then the controller has the storage host run qemu-img with that format, under ``prlimit``
(30 s of CPU, 1 GiB of address space) so a hostile header cannot exhaust it. The checks are the agent's
(``zsutil.imagecheck``, one copy): an uploaded image must be self-contained —
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
from zsutil import imagecheck
from zsutil.imagecheck import HEADER_BYTES, ImageInfo

LIMITS = ["prlimit", "--cpu=30", "--as=1073741824"]


class UnsafeImage(InvalidArgument):
    """The downloaded file is not an acceptable image (400, SYS.1007)."""


@dataclass(frozen=True)
class Inspected:
    format: str  # qcow2, raw or iso
    virtual_size: int


def check_info(info: dict[str, Any], *, url: str, declared: str, iso_signature: bool) -> Inspected:
    """Validate parsed ``qemu-img info`` JSON of an uploaded image (:func:`zsutil.imagecheck.check_info`)."""
    parsed = ImageInfo.from_json(info)
    try:
        fmt = imagecheck.check_info(parsed, image=url, expected=declared, iso_signature=iso_signature)
    except imagecheck.ImageRejected as e:
        raise UnsafeImage(e.message) from None
    return Inspected(fmt, parsed.virtual_size)


def check_header(head: bytes, *, url: str, declared: str) -> str:
    """The format to tell qemu-img (``qcow2``/``raw``) from the first bytes, checked before qemu-img runs
    (:func:`zsutil.imagecheck.check_header`)."""
    try:
        return imagecheck.check_header(head, image=url, expected=declared)
    except imagecheck.ImageRejected as e:
        raise UnsafeImage(e.message) from None


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
    iso = imagecheck.has_iso_signature(head)
    out = await execute(conn, [*LIMITS, "qemu-img", "info", "--output=json", "-U", "-f", fmt, path], timeout=60)
    try:
        info = json.loads(out)
    except ValueError as e:
        raise UnsafeImage(f"image {url}: qemu-img info printed no JSON ({out[:200]!r})") from e
    return check_info(info, url=url, declared=declared, iso_signature=iso)
