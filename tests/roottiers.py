"""Which test tiers need root, and the error a run without root gets (used by ``tests/conftest.py``).

A root tier run without root must fail loudly: an ``xfail``/skip would report green while nothing ran.
"""

from __future__ import annotations

ROOT_TIERS = ("functional", "e2e", "browser")


def root_tier_error(nodeid: str, euid: int) -> str | None:
    """The error for test ``nodeid`` (``tests/<tier>/...``) run by ``euid``, or None when it may run."""
    if euid == 0:
        return None
    parts = nodeid.split("::", 1)[0].split("/")
    tier = next((p for p in parts if p in ROOT_TIERS), None)
    if tier is None:
        return None
    return (f"this tier needs root: tests/{tier} runs real host processes (namespaces, qemu, testbed) "
            f"and euid is {euid}; run it as root through /work/wt/run-heavy")
