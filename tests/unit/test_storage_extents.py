"""Extent planning for the sparse host-to-host copy, and the source-URL parser."""

from __future__ import annotations

import pytest

from storage.errors import InvalidArgument
from storage.extents import payload_size, plan
from storage.fetch import FileSource, HttpSource, SftpSource, parse_source


def covered(frames: list[tuple[int, int]]) -> set[int]:
    return {b for off, n in frames for b in range(off, off + n)}


def test_plan_merges_small_gaps_and_splits() -> None:
    frames = plan([(0, 10), (12, 8), (100, 50)], 1000, chunk=16, merge_gap=4)
    assert frames == [(0, 16), (16, 4), (100, 16), (116, 16), (132, 16), (148, 2)]
    assert all(n <= 16 for _, n in frames)


def test_plan_covers_every_allocated_byte_once_and_clips() -> None:
    ext = [(50, 30), (0, 10), (60, 40), (990, 100)]
    frames = plan(ext, 1000, chunk=7, merge_gap=0)
    want = {b for off, n in ext for b in range(off, min(off + n, 1000))}
    assert covered(frames) == want
    assert sum(n for _, n in frames) == len(want)  # no byte twice
    assert frames == sorted(frames)


def test_plan_edge_cases() -> None:
    assert plan([], 100) == []
    assert plan([(200, 10), (5, 0)], 100) == []
    with pytest.raises(ValueError):
        plan([(0, 1)], 1, chunk=0)


def test_payload_size() -> None:
    assert payload_size([(0, 10), (20, 5)], 16, 48) == 15 + 32 + 48


def test_parse_source() -> None:
    assert parse_source("file:///var/img.qcow2") == FileSource("/var/img.qcow2")
    assert parse_source("https://h/x") == HttpSource("https://h/x")
    s = parse_source("sftp://root:p%40w@10.0.0.1:2222/bs/i.qcow2")
    assert s == SftpSource("10.0.0.1", "root", "p@w", "/bs/i.qcow2", 2222)
    assert "p@w" not in repr(s)
    for bad in ["ftp://x/y", "file://relative", "sftp://root@h/x", "http:///nohost"]:
        with pytest.raises(InvalidArgument):
            parse_source(bad)
    with pytest.raises(InvalidArgument) as e:
        parse_source("sftp://root:secret@h")
    assert "secret" not in str(e.value)
