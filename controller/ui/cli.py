"""The ``zstack-cli`` line equivalent to one API call the console makes (1.0's "API details", shown on
every page next to the result)."""

from __future__ import annotations

import shlex
from typing import Any

_CLI_OPS = {"=": "=", "!=": "!=", "like": "~=", "not like": "!~=", "in": "?=", "not in": "!?=", ">": ">",
            "<": "<", ">=": ">=", "<=": "<="}
_HIDDEN = frozenset({"password"})


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return ",".join(_value(x) for x in v)
    return str(v)


def cli_line(api: str, body: dict[str, Any]) -> str:
    """``zstack-cli <Api> name=value ...`` (POSIX-quoted; passwords masked; conditions as name<op>value)."""
    parts = ["zstack-cli", api]
    for c in body.get("conditions", []) or []:
        op = _CLI_OPS.get(c["op"], c["op"])
        value = c.get("value")
        if op in ("~=", "!~=") and isinstance(value, str):
            inner = value.strip("%")
            value = inner if f"%{inner}%" == value and "%" not in inner and "_" not in inner else value
        parts.append(shlex.quote(f"{c['name']}{op}{_value(value)}"))
    for k, v in body.items():
        if k in ("conditions", "session") or v is None or v == [] or v == "":
            continue
        shown = "********" if k in _HIDDEN else _value(v)
        parts.append(shlex.quote(f"{k}={shown}"))
    return " ".join(parts)
