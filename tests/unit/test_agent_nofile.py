"""The agent raises its soft open-files limit at start (the metadata server's global cap is a quarter of it)."""

from __future__ import annotations

import resource

from flatnet.connlimit import default_total
from kvmagent.main import raise_nofile_limit


def test_soft_limit_is_raised_towards_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert default_total() == 64  # a quarter of 256
        got = raise_nofile_limit(4096)
        assert got == min(4096, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert default_total() == max(64, min(1024, got // 4))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
