"""Host-to-host copy of volume files for ``LocalStorageMigrateVolume`` (agent to agent over HTTP).

The source agent streams each file to the destination agent's raw endpoint :data:`RECEIVE_PATH`
(``POST``, ``Authorization: Bearer <dest token>``, headers ``X-Zs-Path`` = absolute path, kept identical
on the destination so backing chains stay valid, and ``X-Zs-Size`` = file size). Body = frames::

    >QQ offset length | <length bytes of data>      one per allocated range (holes are never sent)
    >QQ END 32        | sha256 of every preceding frame (headers and data) in order

Guarantees:
* no file is loaded into memory: ranges are read/written in chunks of :data:`extents.CHUNK` bytes, the
  next chunk is read while the current one is sent (and written while the next is received);
* the destination writes into ``<path>.partial``, truncates it to ``X-Zs-Size`` (holes stay holes),
  compares its own sha256 with the sender's, and only then fsyncs and renames it; a mismatch, a short
  stream or a dropped connection removes the partial file; the agent's start-up reconcile removes any
  ``*.partial`` left by a crash;
* the source file is only read; the source also compares the destination's sha256 with its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from storage import extents, files
from storage.errors import ChecksumMismatch, Conflict, InvalidArgument, TransferFailed
from storage.layout import partial_path

RECEIVE_PATH = "/localstorage/receive"
CHECKBITS_PATH = "/localstorage/checkbits"
DELETE_PATH = "/localstorage/delete"
HEADER = struct.Struct(">QQ")
END = (1 << 64) - 1
DIGEST_LEN = 32


@dataclass(frozen=True)
class Copied:
    path: str
    size: int
    allocated: int
    sha256: str
    skipped: bool = False


# ---------------------------------------------------------------- source side


def _read_frame(fd: int, off: int, n: int, h: hashlib._Hash) -> tuple[bytes, bytes]:
    data = os.pread(fd, n, off)
    if len(data) != n:
        raise TransferFailed(f"source file shrank while being copied (offset {off})")
    head = HEADER.pack(off, n)
    h.update(head)
    h.update(data)
    return head, data


async def _frames(fd: int, plan: list[extents.Range], h: hashlib._Hash) -> AsyncIterator[bytes]:
    """Frames of ``plan`` with one read ahead in a worker thread (reading and hashing off the loop)."""
    nxt: asyncio.Future[tuple[bytes, bytes]] | None = None
    try:
        for i in range(len(plan)):
            cur = (
                nxt
                if nxt is not None
                else asyncio.ensure_future(asyncio.to_thread(_read_frame, fd, *plan[i], h))
            )
            head, data = await cur
            nxt = (
                asyncio.ensure_future(asyncio.to_thread(_read_frame, fd, *plan[i + 1], h))
                if i + 1 < len(plan)
                else None
            )
            yield head
            yield data
        yield HEADER.pack(END, DIGEST_LEN) + h.digest()
    finally:
        if nxt is not None:
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    try:
        body = await resp.json()
        return str(body.get("error", {}).get("message") or body)
    except (aiohttp.ContentTypeError, ValueError):
        return (await resp.text())[:500]


async def send_file(session: aiohttp.ClientSession, dest_url: str, token: str, path: Path) -> Copied:
    """Stream ``path`` (allocated ranges only) to the destination agent; return what it confirmed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        plan = extents.plan(await asyncio.to_thread(extents.data_extents, fd, size), size)
        length = extents.payload_size(plan, HEADER.size, HEADER.size + DIGEST_LEN)
        h = hashlib.sha256()
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Zs-Path": str(path),
            "X-Zs-Size": str(size),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
        }
        try:
            async with session.post(
                dest_url.rstrip("/") + RECEIVE_PATH,
                data=_frames(fd, plan, h),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=900),
            ) as resp:
                if resp.status != 200:
                    raise TransferFailed(
                        f"destination refused {path}: HTTP {resp.status}: {await _error_text(resp)}",
                        details={"path": str(path)},
                    )
                reply = await resp.json()
        except aiohttp.ClientError as e:
            raise TransferFailed(
                f"copy of {path} to {dest_url} failed: {e}", details={"path": str(path)}
            ) from e
    finally:
        os.close(fd)
    mine = h.hexdigest()
    if reply.get("sha256") != mine:
        raise ChecksumMismatch(
            f"copy of {path}: destination sha256 {reply.get('sha256')} != source {mine}",
            details={"path": str(path)},
        )
    return Copied(path=str(path), size=size, allocated=int(reply.get("allocated", 0)), sha256=mine)


async def remote_has(
    session: aiohttp.ClientSession, dest_url: str, token: str, storage_path: str, path: Path, md5: str
) -> bool:
    """Whether the destination already has ``path`` with this md5 (its ``checkbits`` endpoint). A file
    present with another md5 is a conflict: it is never overwritten (other volumes may depend on it)."""
    body = {"storagePath": storage_path, "paths": [str(path)], "withMd5": True}
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": os.urandom(16).hex()}
    try:
        async with session.post(dest_url.rstrip("/") + CHECKBITS_PATH, json=body, headers=headers) as resp:
            if resp.status != 200:
                raise TransferFailed(
                    f"checkbits of {path} on {dest_url}: HTTP {resp.status}: {await _error_text(resp)}"
                )
            bit = (await resp.json())["bits"][0]
    except aiohttp.ClientError as e:
        raise TransferFailed(f"checkbits of {path} on {dest_url} failed: {e}") from e
    if not bit.get("existing"):
        return False
    if bit.get("md5") != md5:
        raise Conflict(
            f"{path} exists on the destination with md5 {bit.get('md5')}, source has {md5}",
            details={"path": str(path)},
        )
    return True


async def remote_delete(
    session: aiohttp.ClientSession, dest_url: str, token: str, storage_path: str, path: str
) -> None:
    """Undo of a copy: delete ``path`` on the destination (its ``delete`` endpoint)."""
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": os.urandom(16).hex()}
    async with session.post(
        dest_url.rstrip("/") + DELETE_PATH,
        json={"storagePath": storage_path, "paths": [path]},
        headers=headers,
    ) as resp:
        if resp.status != 200:
            raise TransferFailed(
                f"delete of {path} on {dest_url}: HTTP {resp.status}: {await _error_text(resp)}"
            )


# ---------------------------------------------------------------- destination side


class _Writer:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.h = hashlib.sha256()

    def write(self, head: bytes, off: int, data: bytes) -> None:
        self.h.update(head)
        self.h.update(data)
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, off)
            view, off = view[n:], off + n


async def _drain_frames(content: aiohttp.StreamReader, w: _Writer, size: int) -> bytes:
    """Write every data frame; return the sender's digest from the END frame."""
    pending: asyncio.Future[None] | None = None
    try:
        while True:
            head = await content.readexactly(HEADER.size)
            off, n = HEADER.unpack(head)
            if off == END:
                if n != DIGEST_LEN:
                    raise TransferFailed(f"bad END frame length {n}")
                digest = await content.readexactly(n)
                if pending is not None:
                    await pending  # surfaces a failed write (e.g. ENOSPC)
                    pending = None
                return digest
            if n > 4 * extents.CHUNK or off + n > size:
                raise TransferFailed(f"bad frame offset={off} length={n} for size {size}")
            data = await content.readexactly(n)
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(asyncio.to_thread(w.write, head, off, data))
    finally:
        if pending is not None:  # never close the fd under a running write
            await asyncio.gather(pending, return_exceptions=True)


def _finish(fd: int, size: int, tmp: Path, final: Path) -> int:
    os.ftruncate(fd, size)
    os.fsync(fd)
    os.replace(tmp, final)
    files.fsync_dir(final.parent)
    return files.allocated_bytes(final)


async def receive(content: aiohttp.StreamReader, final: Path, size: int) -> Copied:
    """Receive one file into ``final`` (already validated by the caller to lie inside the storage)."""
    if size < 0:
        raise InvalidArgument(f"X-Zs-Size {size} must not be negative", details={"field": "X-Zs-Size"})
    created = files.make_dirs(final.parent)
    tmp = partial_path(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    done = False
    try:
        w = _Writer(fd)
        try:
            theirs = await _drain_frames(content, w, size)
        except (asyncio.IncompleteReadError, aiohttp.ClientError, ConnectionError) as e:
            raise TransferFailed(f"stream of {final} ended early: {e}", details={"path": str(final)}) from e
        mine = w.h.digest()
        if mine != theirs:
            raise ChecksumMismatch(
                f"received {final}: sha256 {mine.hex()} != sender's {theirs.hex()}",
                details={"path": str(final)},
            )
        allocated = await asyncio.to_thread(_finish, fd, size, tmp, final)
        done = True
        return Copied(path=str(final), size=size, allocated=allocated, sha256=mine.hex())
    finally:
        os.close(fd)
        if not done:
            files.remove_file(tmp)
            files.remove_dirs(created)
