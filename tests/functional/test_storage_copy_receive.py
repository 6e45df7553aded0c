"""The destination's receive endpoint fed hand-written copy streams over a real loopback connection.

The agent reads the body straight from the socket (``storage.rawrecv``: ``splice`` into the file, digest
through ``mmap``) and answers on it; these tests check the stream's guarantees on that path: a good
stream gives the file (holes kept), a bad digest, a bad frame, trailing data or a cut connection leave
neither the file nor its ``.partial``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storage_agent import Agent

from kvmagent.contract import storage as c
from storage import files
from storage.extents import END, HEADER, stream_digest
from storage.migrate import RECEIVE_PATH

MiB = 1 << 20


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[Agent, Path]]:
    a = await Agent(tmp_path / "state").start()
    try:
        await a.call(c.InitCmd(storagePath=str(tmp_path / "ps"), primaryStorageUuid="ps-r"))
        yield a, tmp_path / "ps"
    finally:
        await a.stop()


def body_of(frames: list[tuple[int, bytes]], version: int = 3, digest: bytes | None = None) -> bytes:
    """The wire body: frames, then END with the digest of wire ``version`` (unless ``digest`` forces one)."""
    h = stream_digest(version)
    out = b""
    for off, data in frames:
        piece = HEADER.pack(off, len(data)) + data
        out += piece
        h.update(piece)
    if digest is None:
        digest = h.digest()
    return out + HEADER.pack(END, len(digest)) + digest


async def post(a: Agent, path: Path, size: int, body: bytes, *, version: int = 3, cut: int | None = None):
    """Send the request by hand (``cut``: close the connection after that many body bytes); return
    ``(status, reply)``, ``(None, None)`` when the connection ended without an answer."""
    host, port = a.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {RECEIVE_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {a.token}\r\n"
        f"X-Zs-Path: {path}\r\nX-Zs-Size: {size}\r\nX-Zs-Stream: {version}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode())
    writer.write(body if cut is None else body[:cut])
    await writer.drain()
    if cut is not None:
        writer.close()
        await writer.wait_closed()
        return None, None
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def nothing_left(path: Path) -> bool:
    return not path.exists() and not path.with_name(path.name + ".partial").exists()


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_good_stream_gives_the_sparse_file(agent: tuple[Agent, Path], version: int) -> None:
    a, ps = agent
    path = ps / "dataVolumes" / "acct-a" / "vol-r" / "r.qcow2"
    first, second = os.urandom(3 * MiB + 17), os.urandom(20 * MiB)  # small part in aiohttp's buffer, big spliced
    size = 64 * MiB
    status, reply = await post(a, path, size, body_of([(0, first), (32 * MiB, second)], version), version=version)
    assert status == 200, reply
    data = path.read_bytes()
    assert len(data) == size and data[: len(first)] == first and data[32 * MiB : 52 * MiB] == second
    assert data[len(first) : 32 * MiB] == bytes(32 * MiB - len(first))
    assert files.allocated_bytes(path) < 30 * MiB  # the hole was not written
    assert reply["size"] == size and reply["checksum"].startswith(f"{stream_digest(version).name}:")
    assert not path.with_name(path.name + ".partial").exists()


async def test_bad_digest_leaves_nothing(agent: tuple[Agent, Path]) -> None:
    a, ps = agent
    path = ps / "dataVolumes" / "acct-a" / "vol-r" / "bad.qcow2"
    status, reply = await post(a, path, 16 * MiB, body_of([(0, os.urandom(12 * MiB))], digest=b"\0" * 16))
    assert status == 409 and reply["error"]["code"] == "STORAGE.CHECKSUM_MISMATCH"
    assert nothing_left(path)


@pytest.mark.parametrize(
    "frames, extra, what",
    [
        ([(15 * MiB, os.urandom(2 * MiB))], b"", "bad frame"),  # past X-Zs-Size
        ([(0, os.urandom(8 * MiB))], b"junk", "after the END frame"),
    ],
)
async def test_bad_frames_are_refused(agent: tuple[Agent, Path], frames: list, extra: bytes, what: str) -> None:
    a, ps = agent
    path = ps / "dataVolumes" / "acct-a" / "vol-r" / "frame.qcow2"
    body = body_of(frames)
    if extra:  # trailing bytes inside Content-Length
        body += extra
    status, reply = await post(a, path, 16 * MiB, body)
    assert status == 502 and what in reply["error"]["message"], reply
    assert nothing_left(path)


async def test_cut_connection_leaves_nothing_and_the_agent_still_serves(agent: tuple[Agent, Path]) -> None:
    a, ps = agent
    path = ps / "dataVolumes" / "acct-a" / "vol-r" / "cut.qcow2"
    body = body_of([(0, os.urandom(24 * MiB))])
    status, _ = await post(a, path, 32 * MiB, body, cut=10 * MiB)
    assert status is None
    for _ in range(200):  # the agent notices the closed connection asynchronously
        if nothing_left(path):
            break
        await asyncio.sleep(0.05)
    assert nothing_left(path)
    status, reply = await post(a, path, 32 * MiB, body)  # the same path again, on a new connection
    assert status == 200, reply
