"""Every test module (and helper module) of the tiers has a unique basename: pytest imports them by basename
(``prepend`` import mode, each tier's folder on sys.path), so a second ``test_x.py`` in another tier stops
the whole run at collection."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_module_basenames_are_unique_across_tiers() -> None:
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "conftest.py" and "__pycache__" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []
