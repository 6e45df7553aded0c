"""Turns pydantic validation errors into 1.0-style SYS.1007 messages that name field, value and rule."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from controller.api.messages import UUID_PATTERN
from controller.errors import InvalidArgument


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _one(api: str, err: dict[str, Any]) -> str:
    field = _loc(err.get("loc", ()))
    kind = err.get("type", "")
    value = err.get("input")
    if kind == "missing":
        return f"field[{field}] of message[{api}] is mandatory, can not be null"
    if kind == "extra_forbidden":
        return f"field[{field}] is not a parameter of message[{api}]"
    if kind == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return f"valid value for field[{field}] of message[{api}] are [{allowed}], but actual is {value!r}"
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == UUID_PATTERN:
        return (f"field[{field}] of message[{api}]: {value!r} is not a uuid "
                "(32 lower-case hexadecimal characters)")
    return f"field[{field}] of message[{api}]: value {value!r} is invalid: {err.get('msg', kind)}"


def invalid_argument(api: str, exc: ValidationError) -> InvalidArgument:
    msgs = [_one(api, dict(e)) for e in exc.errors(include_url=False)]
    return InvalidArgument("; ".join(msgs))
