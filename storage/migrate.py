"""Host-to-host copy of volume files for ``LocalStorageMigrateVolume`` (agent to agent over HTTP).

The source agent streams each file to the destination agent's raw endpoint :data:`RECEIVE_PATH`
(``POST``, ``Authorization: Bearer <dest token>``, headers ``X-Zs-Path`` = absolute path, kept identical
on the destination so backing chains stay valid, ``X-Zs-Size`` = file size, ``X-Zs-Stream`` = wire
version, absent = 1). Body = frames::

    >QQ offset length | <length bytes of data>      one per allocated range (holes are never sent)
    >QQ END n         | digest of every preceding frame (headers and data) in order

Version 1: the digest is sha256 (n = 32); version 2: CRC-32 (n = 4); version 3 (sent): XXH3-128 (n = 16),
because on two cores the copy is CPU-bound and sha256, then CRC-32, cost more than the copy itself or a
good part of it. The digest guards the transfer against accidental damage (truncation, misplaced or
corrupted ranges); it is not an authenticity check (neither was sha256 inside plain HTTP). The destination
accepts every version. The controller relies on these verified checksums (it does not read every file
again for an md5 on both hosts, as 1.0 did).

Guarantees:
* no file is loaded into memory: the source sends each range with ``sendfile`` (page cache to socket) while
  a worker thread computes the stream's digest from the file; the destination parses the stream as it
  arrives (:class:`extents.FrameParser`), hashing and writing batches of :data:`BATCH` bytes in a worker
  thread (one batch in flight while the next one is received) and starting their write-back early;
* the destination writes into ``<path>.partial``, truncates it to ``X-Zs-Size`` (holes stay holes),
  compares its own digest with the sender's, and only then fsyncs and renames it; a mismatch, a short
  stream or a dropped connection removes the partial file; the agent's start-up reconcile removes any
  ``*.partial`` left by a crash;
* the source file is only read; the source also compares the destination's digest with its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
from yarl import URL

from storage import extents, files, rawrecv
from storage.errors import ChecksumMismatch, Conflict, InvalidArgument, TransferFailed
from storage.layout import partial_path
from storage.rawrecv import RawBody

RECEIVE_PATH = "/localstorage/receive"
CHECKBITS_PATH = "/localstorage/checkbits"
DELETE_PATH = "/localstorage/delete"
HEADER = extents.HEADER
END = extents.END
#: The destination hashes and writes what it received in batches of about this size (one in flight).
BATCH = 4 << 20
#: The source hashes its file in reads of this size, in parallel with sending it.
HASH_READ = 256 << 10
IOV_MAX = 1024
#: Seconds without progress (one frame sent, or the reply) before the copy is declared failed.
IDLE_TIMEOUT = 900
#: After this many bytes written, the destination starts their write-back (overlaps the final fsync).
WRITEBACK = 32 << 20


@dataclass(frozen=True)
class Copied:
    """One copied file. ``checksum`` is ``<algorithm>:<hex>`` of the verified stream (``xxh3-128:...`` for
    wire version 3, ``crc32:...`` for 2, ``sha256:...`` for 1); empty when ``skipped``."""

    path: str
    size: int
    allocated: int
    checksum: str
    skipped: bool = False


def _checksum(h: extents.Digest) -> str:
    return f"{h.name}:{h.digest().hex()}"


# ---------------------------------------------------------------- source side


def _digest_frames(fd: int, plan: list[extents.Range], stop: threading.Event) -> bytes:
    """Digest (wire :data:`extents.VERSION`) of the frame stream of ``plan``, computed from the file in a
    worker thread while the data goes out; ``b""`` when ``stop`` is set (the transfer failed)."""
    h = extents.stream_digest(extents.VERSION)
    view = memoryview(bytearray(HASH_READ))
    for off, n in plan:
        h.update(HEADER.pack(off, n))
        # a set ``stop``: the transfer failed, nobody wants the digest any more
        if not extents.feed_range(h, fd, off, n, view, "source file shrank while being copied", stop):
            return b""
    return h.digest()


def _request_head(url: URL, token: str, path: Path, size: int, length: int) -> bytes:
    lines = [
        f"POST {RECEIVE_PATH} HTTP/1.1",
        f"Host: {url.raw_host}:{url.port}",
        f"Authorization: Bearer {token}",
        f"X-Zs-Path: {path}",
        f"X-Zs-Size: {size}",
        f"X-Zs-Stream: {extents.VERSION}",
        "Content-Type: application/octet-stream",
        f"Content-Length: {length}",
        "Connection: close",
    ]
    if any(c in line for line in lines for c in "\r\n"):
        raise InvalidArgument(f"path or token contains a line break: {str(path)!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


TLS_CHUNK = 1 << 20


async def _send_read(writer: asyncio.StreamWriter, fd: int, off: int, n: int) -> int:
    """Send ``n`` bytes of ``fd`` from ``off`` through ``writer`` (TLS); returns the bytes sent (fewer when the
    file ended early)."""
    sent = 0
    nxt = asyncio.ensure_future(asyncio.to_thread(os.pread, fd, min(TLS_CHUNK, n), off))
    try:
        while sent < n:
            data = await nxt
            if not data:
                return sent
            sent += len(data)
            if sent < n:
                nxt = asyncio.ensure_future(asyncio.to_thread(os.pread, fd, min(TLS_CHUNK, n - sent), off + sent))
            writer.write(data)
            await writer.drain()
        return sent
    finally:
        if not nxt.done():
            await asyncio.gather(nxt, return_exceptions=True)


async def _send_frames(
    writer: asyncio.StreamWriter, f: BinaryIO, plan: list[extents.Range], digest: Awaitable[bytes]
) -> None:
    """Each frame header, then its data straight from the page cache (``sendfile``), then END. Over TLS
    (no ``sendfile``) the data is read in :data:`TLS_CHUNK` pieces in a worker thread, the next piece read
    while the current one is encrypted and sent (asyncio's own fallback reads 16 KiB per thread hop: ~10x
    slower)."""
    loop = asyncio.get_running_loop()
    tls = writer.transport.get_extra_info("sslcontext") is not None
    for off, n in plan:
        writer.write(HEADER.pack(off, n))
        async with asyncio.timeout(IDLE_TIMEOUT):
            await writer.drain()
            if tls:
                sent = await _send_read(writer, f.fileno(), off, n)
            else:
                sent = await loop.sendfile(writer.transport, f, off, n)
        if sent != n:
            raise TransferFailed(f"source file shrank while being copied (offset {off})")
    tail = await digest
    writer.write(HEADER.pack(END, len(tail)) + tail)
    await writer.drain()


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the HTTP response (the agent always answers JSON with Content-Length)."""
    async with asyncio.timeout(IDLE_TIMEOUT):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        body = await reader.readexactly(int(fields.get("content-length", "0")))
    try:
        parsed = json.loads(body)
    except ValueError:
        return status, {"error": {"message": body[:500].decode(errors="replace")}}
    return status, parsed if isinstance(parsed, dict) else {"reply": parsed}


async def _post(url: URL, head: bytes, f: BinaryIO, plan: list[extents.Range], fd: int,
                tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """Send the request (hashing the source concurrently) and return the destination's JSON reply."""
    stop = threading.Event()
    digest = asyncio.ensure_future(asyncio.to_thread(_digest_frames, fd, plan, stop))
    https: ssl.SSLContext | bool = (tls or True) if url.scheme == "https" else False
    reader, writer = await asyncio.open_connection(url.raw_host, url.port, ssl=https)
    try:
        writer.write(head)
        try:
            await _send_frames(writer, f, plan, digest)
        except (ConnectionError, TimeoutError) as e:  # the destination may have answered early
            status, reply = await asyncio.wait_for(_read_reply(reader), 5)
            if status == 200:
                raise TransferFailed(f"connection lost: {e}") from e
        else:
            status, reply = await _read_reply(reader)
        if status != 200:
            msg = (reply.get("error") or {}).get("message") or reply
            raise TransferFailed(f"destination refused the file: HTTP {status}: {msg}")
        reply["sourceChecksum"] = f"{extents.stream_digest(extents.VERSION).name}:{(await digest).hex()}"
        return reply
    finally:
        stop.set()
        writer.close()
        await asyncio.gather(digest, writer.wait_closed(), return_exceptions=True)


async def send_file(dest_url: str, token: str, path: Path, *, tls: ssl.SSLContext | None = None) -> Copied:
    """Stream ``path`` (allocated ranges only) to the destination agent; return what it confirmed.

    The data goes from the page cache to the socket with ``sendfile`` (never through Python buffers);
    the stream's checksum is computed at the same time in a worker thread, sent in the END frame (the
    destination verifies it before making the file visible) and compared with the destination's reply.
    ``tls``: the context an https destination is verified with (the controller's CA on a TLS agent)."""
    url = URL(dest_url)
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise InvalidArgument(
            f"destAgentUrl {dest_url!r} must be an http(s) URL", details={"field": "destAgentUrl"}
        )
    with open(path, "rb") as f:  # noqa: ASYNC230 (opening is not a blocking read)
        fd = f.fileno()
        size = os.fstat(fd).st_size
        plan = extents.plan(await asyncio.to_thread(extents.data_extents, fd, size), size)
        digest_len = extents.stream_digest(extents.VERSION).digest_size
        length = extents.payload_size(plan, HEADER.size, HEADER.size + digest_len)
        try:
            reply = await _post(url, _request_head(url, token, path, size, length), f, plan, fd, tls)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            raise TransferFailed(
                f"copy of {path} to {dest_url} failed: {e}", details={"path": str(path)}
            ) from e
        except TransferFailed as e:
            raise TransferFailed(f"copy of {path} to {dest_url}: {e.message}", details={"path": str(path)}) from e
    mine = reply["sourceChecksum"]
    if reply.get("checksum") != mine:
        raise ChecksumMismatch(
            f"copy of {path}: destination checksum {reply.get('checksum')} != source {mine}",
            details={"path": str(path)},
        )
    return Copied(path=str(path), size=size, allocated=int(reply.get("allocated", 0)), checksum=mine)


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    try:
        body = await resp.json()
        return str(body.get("error", {}).get("message") or body)
    except (aiohttp.ContentTypeError, ValueError):
        return (await resp.text())[:500]


async def remote_has(
    session: aiohttp.ClientSession, dest_url: str, token: str, storage_path: str, path: Path, md5: str,
    *, tls: ssl.SSLContext | None = None,
) -> bool:
    """Whether the destination already has ``path`` with this md5 (its ``checkbits`` endpoint). A file
    present with another md5 is a conflict: it is never overwritten (other volumes may depend on it)."""
    body = {"storagePath": storage_path, "paths": [str(path)], "withMd5": True}
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": os.urandom(16).hex()}
    try:
        async with session.post(dest_url.rstrip("/") + CHECKBITS_PATH, json=body, headers=headers,
                                ssl=tls or True) as resp:
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
    session: aiohttp.ClientSession, dest_url: str, token: str, storage_path: str, path: str,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Undo of a copy: delete ``path`` on the destination (its ``delete`` endpoint)."""
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": os.urandom(16).hex()}
    async with session.post(
        dest_url.rstrip("/") + DELETE_PATH,
        json={"storagePath": storage_path, "paths": [path]},
        headers=headers,
        ssl=tls or True,
    ) as resp:
        if resp.status != 200:
            raise TransferFailed(
                f"delete of {path} on {dest_url}: HTTP {resp.status}: {await _error_text(resp)}"
            )


# ---------------------------------------------------------------- destination side


class _Writer:
    """Hashes and writes the parser's ops in a worker thread; contiguous pieces go out in one pwritev.
    Every :data:`WRITEBACK` bytes it starts the write-back of what it wrote (``POSIX_FADV_DONTNEED``
    starts it without waiting), so the final fsync has little left to do."""

    def __init__(self, fd: int, version: int) -> None:
        self.fd = fd
        self.h = extents.stream_digest(version)
        self._dirty = 0
        self._lo = -1
        self._hi = 0

    def apply(self, ops: list[extents.Op]) -> None:
        run: list[memoryview] = []
        at = 0
        for off, view in ops:
            self.h.update(view)
            if off is None:
                continue
            if run and (off != at or len(run) >= IOV_MAX):
                self._pwritev(run, at - sum(len(v) for v in run))
                run = []
            run.append(view)
            at = off + len(view)
        if run:
            self._pwritev(run, at - sum(len(v) for v in run))

    def _pwritev(self, views: list[memoryview], off: int) -> None:
        start = off
        while views:
            n = os.pwritev(self.fd, views, off)
            off += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views = views[1:]
            if n:
                views[0] = views[0][n:]
        self._lo = start if self._lo < 0 else min(self._lo, start)
        self._hi, self._dirty = max(self._hi, off), self._dirty + off - start
        if self._dirty >= WRITEBACK:
            os.posix_fadvise(self.fd, self._lo, self._hi - self._lo, os.POSIX_FADV_DONTNEED)
            self._dirty, self._lo, self._hi = 0, -1, 0


async def _drain_frames(content: aiohttp.StreamReader, w: _Writer, size: int) -> bytes:
    """Write every data frame (batches of about :data:`BATCH` bytes in a worker thread, one batch in
    flight while the next is received); return the sender's digest from the END frame."""
    parser = extents.FrameParser(size, w.h.digest_size)
    pending: asyncio.Future[None] | None = None
    try:
        while parser.digest is None:
            ops: list[extents.Op] = []
            got = 0
            while got < BATCH and parser.digest is None:
                chunk = await content.readany()
                if not chunk:
                    raise TransferFailed("stream ended before the END frame")
                try:
                    ops += parser.feed(chunk)
                except ValueError as e:
                    raise TransferFailed(str(e)) from e
                got += len(chunk)
            if pending is not None:
                await pending  # surfaces a failed write (e.g. ENOSPC)
            pending = asyncio.ensure_future(asyncio.to_thread(w.apply, ops))
        await pending  # type: ignore[misc]
        pending = None
        return parser.digest
    finally:
        if pending is not None:  # never close the fd under a running write
            await asyncio.gather(pending, return_exceptions=True)


def _finish(fd: int, size: int, tmp: Path, final: Path) -> int:
    os.ftruncate(fd, size)
    os.fsync(fd)
    os.replace(tmp, final)
    files.fsync_dir(final.parent)
    return files.allocated_bytes(final)


async def _drain_raw(raw: RawBody, fd: int, size: int, w: _Writer) -> bytes:
    """:func:`rawrecv.receive_frames` in a worker thread; never returns while the thread still uses ``fd``
    (on cancellation the socket is shut down, which ends the thread at once)."""
    job = asyncio.ensure_future(asyncio.to_thread(rawrecv.receive_frames, raw, fd, size, w.h))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        raw.sock.shutdown(socket.SHUT_RDWR)
        await asyncio.gather(job, return_exceptions=True)
        raise


async def receive(
    content: aiohttp.StreamReader | RawBody, final: Path, size: int, version: int = 1
) -> Copied:
    """Receive one file into ``final`` (already validated by the caller to lie inside the storage) from a
    stream of wire ``version`` (:data:`extents.VERSIONS`): an aiohttp body, or a :class:`rawrecv.RawBody`
    (the connection's socket, read with ``splice``)."""
    if size < 0:
        raise InvalidArgument(f"X-Zs-Size {size} must not be negative", details={"field": "X-Zs-Size"})
    if version not in extents.VERSIONS:
        raise InvalidArgument(
            f"X-Zs-Stream {version} is not a supported copy stream version {extents.VERSIONS}",
            details={"field": "X-Zs-Stream", "value": version},
        )
    created = files.make_dirs(final.parent)
    tmp = partial_path(final)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)  # read: the raw path digests via mmap
    done = False
    try:
        w = _Writer(fd, version)
        try:
            if isinstance(content, RawBody):
                theirs = await _drain_raw(content, fd, size, w)
            else:
                theirs = await _drain_frames(content, w, size)
        except (asyncio.IncompleteReadError, aiohttp.ClientError, ConnectionError) as e:
            raise TransferFailed(f"stream of {final} ended early: {e}", details={"path": str(final)}) from e
        mine = w.h.digest()
        if mine != theirs:
            raise ChecksumMismatch(
                f"received {final}: {w.h.name} {mine.hex()} != sender's {theirs.hex()}",
                details={"path": str(final)},
            )
        allocated = await asyncio.to_thread(_finish, fd, size, tmp, final)
        done = True
        return Copied(path=str(final), size=size, allocated=allocated, checksum=_checksum(w.h))
    finally:
        os.close(fd)
        if not done:
            files.remove_file(tmp)
            files.remove_dirs(created)
