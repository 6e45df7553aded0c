"""The copy stream's wire format: incremental frame parsing and the versioned digests."""

from __future__ import annotations

import hashlib
import zlib

import pytest
import xxhash

from storage.extents import END, HEADER, Crc32, FrameParser, stream_digest


def stream(frames: list[tuple[int, bytes]], digest: bytes) -> bytes:
    body = b"".join(HEADER.pack(off, len(d)) + d for off, d in frames)
    return body + HEADER.pack(END, len(digest)) + digest


def replay(parser: FrameParser, body: bytes, step: int) -> tuple[bytes, bytearray]:
    """Feed ``body`` in pieces of ``step`` bytes; return what was hashed and the written file."""
    hashed, out = b"", bytearray(parser.size)
    for i in range(0, len(body), step):
        for off, view in parser.feed(body[i : i + step]):
            hashed += bytes(view)
            if off is not None:
                out[off : off + len(view)] = view
    return hashed, out


@pytest.mark.parametrize("step", [1, 5, 16, 17, 1000])
def test_parser_any_chunking_gives_the_same_writes_and_hash_input(step: int) -> None:
    frames = [(0, b"abcdefgh"), (100, b"XYZ"), (200, b"")]
    body = stream(frames, b"\x01\x02\x03\x04")
    p = FrameParser(size=300, digest_len=4)
    hashed, out = replay(p, body, step)
    assert p.digest == b"\x01\x02\x03\x04"
    assert hashed == body[: -(HEADER.size + 4)]  # every frame, headers included, END excluded
    assert out[0:8] == b"abcdefgh" and out[100:103] == b"XYZ" and out.count(0) == 300 - 11


def test_parser_refuses_frames_past_the_size_bad_end_and_trailing_data() -> None:
    with pytest.raises(ValueError, match="offset=290 length=20"):
        FrameParser(size=300, digest_len=4).feed(HEADER.pack(290, 20))
    with pytest.raises(ValueError, match="END frame length 32"):
        FrameParser(size=300, digest_len=4).feed(HEADER.pack(END, 32))
    with pytest.raises(ValueError, match="after the END frame"):
        FrameParser(size=300, digest_len=4).feed(stream([], b"abcd") + b"x")
    with pytest.raises(ValueError, match="length=100"):
        FrameParser(size=10**9, digest_len=4, max_frame=99).feed(HEADER.pack(0, 100))


def test_stream_digests_by_version() -> None:
    data = b"some stream bytes" * 1000
    crc = stream_digest(2)
    crc.update(data[:100])
    crc.update(memoryview(data)[100:])
    assert isinstance(crc, Crc32) and crc.digest() == zlib.crc32(data).to_bytes(4, "big")
    sha = stream_digest(1)
    sha.update(data)
    assert sha.digest() == hashlib.sha256(data).digest() and sha.digest_size == 32
    xxh = stream_digest(3)
    xxh.update(data[:100])
    xxh.update(memoryview(data)[100:])
    assert xxh.digest() == xxhash.xxh3_128(data).digest() and xxh.digest_size == 16 and xxh.name == "xxh3-128"
    with pytest.raises(ValueError, match="version 4"):
        stream_digest(4)
