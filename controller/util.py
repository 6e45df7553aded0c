"""Small helpers shared by the controller's services: uuids and ISO 8601 dates."""

from __future__ import annotations

import datetime as dt
import uuid as _uuid


def new_uuid() -> str:
    """A 1.0-style uuid: 32 lower-case hex characters."""
    return _uuid.uuid4().hex


def now_iso() -> str:
    """The current UTC time in ISO 8601 with milliseconds, e.g. ``2026-01-30T15:01:03.123Z``."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_in(seconds: float) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


#: SQLite's INTEGER range: every integer of every API message is inside it (stated in the OpenAPI schema)
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def check_int64(value: object) -> None:
    """ValueError when an integer in ``value`` (or in its lists/dicts) is outside SQLite's 64 bits."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{value} is out of range [{INT64_MIN}, {INT64_MAX}]")
    elif isinstance(value, list | tuple):
        for v in value:
            check_int64(v)
    elif isinstance(value, dict):
        for v in value.values():
            check_int64(v)
