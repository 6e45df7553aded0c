"""The root tiers fail loudly without root (issue #18): the guard in ``tests/conftest.py`` names the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from roottiers import ROOT_TIERS, root_tier_error

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("tier", ROOT_TIERS)
def test_root_tier_without_root_is_an_error(tier: str) -> None:
    error = root_tier_error(f"tests/{tier}/test_x.py::test_y[a/b]", euid=1000)
    assert error is not None and "this tier needs root" in error and f"tests/{tier}" in error
    assert "1000" in error


@pytest.mark.parametrize("tier", ROOT_TIERS)
def test_root_tier_as_root_runs(tier: str) -> None:
    assert root_tier_error(f"tests/{tier}/test_x.py::test_y", euid=0) is None


@pytest.mark.parametrize("nodeid", ["tests/unit/test_x.py::test_y", "tests/contract/test_x.py::test_y",
                                    "tests/unit/test_x.py::test_y[functional/e2e]"])
def test_other_tiers_run_without_root(nodeid: str) -> None:
    assert root_tier_error(nodeid, euid=1000) is None


def test_conftest_uses_the_guard_not_xfail() -> None:
    """The conftest hook really calls the guard and fails (no xfail/skip marker for root left behind)."""
    text = (ROOT / "tests" / "conftest.py").read_text()
    assert "root_tier_error(item.nodeid, os.geteuid())" in text and "pytest.fail(" in text
    assert "mark.xfail" not in text and "pytest.skip" not in text and "mark.skip" not in text

