"""Destination side of a host-to-host copy, read straight from the connection's socket.

The HTTP server hands over the connection after the request headers (:class:`RawBody`: a blocking dup
of the socket, the body bytes it had already buffered, the body's ``Content-Length``). The data part of
every frame goes socket -> pipe -> ``<path>.partial`` with ``splice`` (no copy through Python buffers);
a second thread computes the digest over each written range, in stream order, reading it back from the
page cache into one reusable 1 MiB buffer, so the checksum overlaps the copy (on two cores it no longer
adds to it). (A read-only ``mmap`` instead of the read costs as much here: populating and dropping its page
tables flushes the TLB of the receiving thread's core too.)

Guarantees (same as :func:`storage.migrate.receive`, which handles the aiohttp stream): frames are
validated like :class:`storage.extents.FrameParser` does (offset + length inside ``X-Zs-Size``, at most
``max_frame`` bytes, END frame carrying a digest of the right length, nothing after it, exactly
``Content-Length`` bytes); never more than ``Content-Length`` bytes are read from the socket; a short
stream or a socket error raises :class:`TransferFailed`, a bad frame :class:`TransferFailed` too.
"""

from __future__ import annotations

import fcntl
import os
import queue
import socket
import threading
from dataclasses import dataclass

from storage import extents
from storage.errors import TransferFailed

HEADER = extents.HEADER
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: After this many bytes written, start their write-back (``POSIX_FADV_DONTNEED``) so the fsync is short.
WRITEBACK = 32 << 20
#: The digest thread reads the received data back in pieces of this size.
HASH_READ = 1 << 20


@dataclass
class RawBody:
    """A request body still in the connection: ``sock`` is a blocking socket (owned by the caller) with a
    receive timeout, ``prefix`` the body bytes already read by the HTTP server, ``length`` the body's size."""

    sock: socket.socket
    prefix: bytes
    length: int


class _Body:
    """Reads the body: first from ``prefix``, then from the socket; never past ``length``."""

    def __init__(self, raw: RawBody) -> None:
        self.sock, self.fd = raw.sock, raw.sock.fileno()
        self.buf = memoryview(raw.prefix)[: raw.length]
        self.left = raw.length - len(self.buf)  # bytes still in the socket
        self._pipe: tuple[int, int] | None = None

    def remaining(self) -> int:
        return len(self.buf) + self.left

    def exact(self, n: int) -> bytes:
        if n > self.remaining():
            raise TransferFailed(f"stream ended before the END frame ({self.remaining()} bytes left, {n} needed)")
        out = bytes(self.buf[:n])
        self.buf = self.buf[len(out) :]
        while len(out) < n:
            got = self.sock.recv(n - len(out))
            if not got:
                raise TransferFailed("connection closed before the END frame")
            out += got
            self.left -= len(got)
        return out

    def write_to(self, fd: int, off: int, n: int) -> None:
        """Write the next ``n`` body bytes at ``off`` of ``fd``."""
        if n > self.remaining():
            raise TransferFailed(f"stream ended inside a frame at offset {off} ({self.remaining()} bytes left)")
        take = min(n, len(self.buf))
        if take:
            _pwrite_all(fd, self.buf[:take], off)
            self.buf = self.buf[take:]
            off, n = off + take, n - take
        while n:
            r, w = self.pipe()
            got = os.splice(self.fd, w, min(n, PIPE_SIZE), flags=os.SPLICE_F_MOVE | os.SPLICE_F_MORE)
            if got <= 0:
                raise TransferFailed(f"connection closed inside a frame at offset {off}")
            self.left, n = self.left - got, n - got
            while got:
                put = os.splice(r, fd, got, offset_dst=off, flags=os.SPLICE_F_MOVE)
                off, got = off + put, got - put

    def pipe(self) -> tuple[int, int]:
        if self._pipe is None:
            self._pipe = os.pipe()
            try:
                fcntl.fcntl(self._pipe[1], F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:  # pipe-max-size lowered by the admin: the default 64 KiB pipe still works
                pass
        return self._pipe

    def close(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe[0])
            os.close(self._pipe[1])
            self._pipe = None


def _pwrite_all(fd: int, data: memoryview, off: int) -> None:
    while data:
        n = os.pwrite(fd, data, off)
        data, off = data[n:], off + n


class _Hasher:
    """Feeds the stream to ``h`` in a thread of its own, in stream order, behind the writes: the frame
    headers as they arrive, each data range once it is in the file ``fd`` (read back from the page cache). The
    receiving thread never waits for it except at the end (:meth:`finish`), so on two cores the checksum
    overlaps the copy instead of following it."""

    def __init__(self, h: extents.Digest, fd: int) -> None:
        self.h, self.fd = h, fd
        self.todo: queue.SimpleQueue[tuple[bytes, int, int] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="copy-digest", daemon=True)
        self.thread.start()

    def put(self, head: bytes, off: int, n: int) -> None:
        self.todo.put((head, off, n))

    def _run(self) -> None:
        try:
            view = memoryview(bytearray(HASH_READ))
            while (item := self.todo.get()) is not None:
                head, off, n = item
                self.h.update(head)
                extents.feed_range(self.h, self.fd, off, n, view, "received file shrank while being checked")
        except BaseException as e:  # handed over to the receiving thread by finish()
            self.error = e
            while self.todo.get() is not None:  # let finish() return
                pass

    def finish(self) -> None:
        """Wait until everything queued is digested; re-raise what the digest thread hit."""
        self.todo.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def receive_frames(raw: RawBody, fd: int, size: int, h: extents.Digest, max_frame: int = 4 * extents.CHUNK) -> bytes:
    """Write every data frame of the body into ``fd`` (opened read-write), feed the stream to ``h`` and
    return the sender's digest from the END frame. Blocking: run it in a worker thread. ``h`` is complete
    when this returns (normally or not): the digest thread has ended."""
    body = _Body(raw)
    dirty, lo, hi = 0, -1, 0
    hasher = _Hasher(h, fd)
    try:
        try:
            while True:
                head = body.exact(HEADER.size)
                off, n = HEADER.unpack(head)
                if off == extents.END:
                    if n != h.digest_size:
                        raise TransferFailed(f"bad END frame length {n} (digest is {h.digest_size} bytes)")
                    theirs = body.exact(n)
                    break
                if n > max_frame or off + n > size:
                    raise TransferFailed(f"bad frame offset={off} length={n} for size {size}")
                if n:
                    body.write_to(fd, off, n)
                hasher.put(head, off, n)
                lo, hi, dirty = (off if lo < 0 else min(lo, off)), max(hi, off + n), dirty + n
                if dirty >= WRITEBACK:
                    os.posix_fadvise(fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
                    dirty, lo, hi = 0, -1, 0
            if body.remaining():
                raise TransferFailed(f"{body.remaining()} bytes of data after the END frame")
        finally:
            hasher.finish()  # before the caller closes fd: the thread reads through it
        return theirs
    except OSError as e:
        raise TransferFailed(f"copy stream broken: {e}") from e
    finally:
        body.close()
