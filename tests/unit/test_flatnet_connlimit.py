"""The metadata server's connection limiter: per-source limit, global cap, release, bounded logging."""

from __future__ import annotations

import logging

import pytest

from flatnet.connlimit import ConnectionLimiter


def test_per_source_limit_and_release() -> None:
    lim = ConnectionLimiter(per_source=2, total=10)
    a, b = (1, "10.0.0.5"), (1, "10.0.0.6")
    assert lim.admit(a) and lim.admit(a)
    assert not lim.admit(a)
    assert lim.admit(b)  # another source is still served
    assert lim.admit((2, "10.0.0.5"))  # the same IP on another L3 namespace is another source
    lim.release(a)
    assert lim.admit(a)
    assert lim.open == 4 and lim.held(a) == 2 and lim.refused == 1


def test_global_cap() -> None:
    lim = ConnectionLimiter(per_source=5, total=3)
    assert all(lim.admit((1, f"10.0.0.{i}")) for i in range(3))
    assert not lim.admit((1, "10.0.0.9"))
    lim.release((1, "10.0.0.0"))
    assert lim.admit((1, "10.0.0.9"))


def test_refusals_are_logged_once_a_minute_per_source(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    lim = ConnectionLimiter(per_source=1, total=10, clock=lambda: now[0])
    lim.admit((1, "10.0.0.5"))
    with caplog.at_level(logging.WARNING, logger="flatnet.connlimit"):
        for _ in range(500):
            lim.admit((1, "10.0.0.5"))
        now[0] = 61.0
        lim.admit((1, "10.0.0.5"))
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 2 and "per-source limit" in msgs[0] and "10.0.0.5" in msgs[0]
    assert "500 refused" in msgs[1]


def test_bad_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="per_source 0"):
        ConnectionLimiter(per_source=0)
