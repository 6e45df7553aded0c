"""Allocated extents of a host file (SEEK_DATA/SEEK_HOLE) and the transfer plan built from them.

The copy sends only allocated ranges; the receiver writes them at their offsets into a sparse file and
truncates it to the source's size, so holes stay holes. :func:`plan` is pure (unit-tested): it merges
extents separated by small gaps (fewer frames; the gap is sent as data) and splits long ones into chunks.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

Range = tuple[int, int]  # (offset, length)

CHUNK = 8 << 20
MERGE_GAP = 64 << 10


def data_extents(fd: int, size: int) -> list[Range]:
    """Allocated ranges of an open file, in order. Falls back to the whole file when the file system does
    not support SEEK_DATA (``EINVAL``)."""
    out: list[Range] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after pos
                break
            if e.errno == errno.EINVAL:
                return [(0, size)] if size else []
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end > start:
            out.append((start, end - start))
        pos = end
    return out


def plan(
    extents: Iterable[Range], size: int, *, chunk: int = CHUNK, merge_gap: int = MERGE_GAP
) -> list[Range]:
    """Frames to send: extents clipped to ``size``, sorted, overlaps and gaps ``<= merge_gap`` merged,
    then split into pieces of at most ``chunk`` bytes. Covers every allocated byte exactly once."""
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    merged: list[list[int]] = []
    for off, length in sorted(extents):
        end = min(off + length, size)
        if length <= 0 or off >= size or end <= off:
            continue
        if merged and off - merged[-1][1] <= merge_gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([off, end])
    out: list[Range] = []
    for start, end in merged:
        for o in range(start, end, chunk):
            out.append((o, min(chunk, end - o)))
    return out


def payload_size(frames: list[Range], header: int, trailer: int) -> int:
    """Bytes on the wire for ``frames`` with a per-frame header and a final trailer."""
    return sum(n for _, n in frames) + header * len(frames) + trailer
