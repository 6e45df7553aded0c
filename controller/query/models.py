"""Wire models of every ``Query<Resource>`` API (ZStack 1.0's APIQueryMessage).

Operators are checked by the compiler against the resource (so the error can name the field), not here:
the model only guarantees the shape. :func:`parse_query_msg` turns pydantic's errors into
:class:`~controller.errors.InvalidArgument` for callers that start from a plain dict.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controller.errors import InvalidArgument
from controller.util import check_int64

Scalar = str | int | float | bool

#: most rows one query returns (and the largest ``start``): bounded replies, and no integer past SQLite's 64 bits
MAX_LIMIT = 100_000
MAX_START = 2 ** 31 - 1

# Canonical operator for every spelling accepted (1.0 wire names plus the CLI's token forms).
OPERATORS: dict[str, str] = {
    "=": "=", "!=": "!=", ">": ">", "<": "<", ">=": ">=", "<=": "<=",
    "in": "in", "not in": "not in", "like": "like", "not like": "not like",
    "is null": "is null", "is not null": "is not null",
    "?=": "in", "!?=": "not in", "~=": "like", "!~=": "not like", "=null": "is null", "!=null": "is not null",
}


def canonical_op(op: str) -> str | None:
    """The canonical operator for ``op`` (case and inner blanks ignored), or None when unknown."""
    return OPERATORS.get(" ".join(op.lower().split()))


class Condition(BaseModel):
    """One ``{name, op, value}`` condition. ``value`` is ignored for ``is null``/``is not null``; for
    ``in``/``not in`` a string is split on commas (1.0: the server splits)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    op: str = Field(min_length=1)
    value: Scalar | list[Scalar] | None = None


class QueryMsg(BaseModel):
    """Parameters common to every query API. ``conditions`` is mandatory (may be empty)."""

    model_config = ConfigDict(extra="forbid")

    conditions: list[Condition]
    limit: int = Field(default=1000, ge=0, le=MAX_LIMIT)
    start: int = Field(default=0, ge=0, le=MAX_START)
    count: bool = False
    replyWithCount: bool = False
    sortBy: str | None = None
    sortDirection: Literal["asc", "desc"] = "asc"
    fields: list[str] | None = None
    timeout: int | float | None = None  # accepted for 1.0 compatibility; queries do not time out

    @field_validator("fields", mode="before")
    @classmethod
    def _split_fields(cls, v: Any) -> Any:
        """``fields="a,b"`` (as a CLI may send it) is the list ``["a", "b"]``."""
        if isinstance(v, str):
            return [f.strip() for f in v.split(",") if f.strip()]
        return v

    @field_validator("*")
    @classmethod
    def _int64(cls, v: Any) -> Any:
        """No integer beyond SQLite's 64 bits reaches the query (it would fail there, as a 500)."""
        if not isinstance(v, str | bool | None):
            check_int64([c.value for c in v] if isinstance(v, list) and v and isinstance(v[0], Condition) else v)
        return v

    @field_validator("sortDirection", mode="before")
    @classmethod
    def _lower_direction(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


def parse_query_msg(params: dict[str, Any]) -> QueryMsg:
    """Validate a query API's parameters; every problem is reported in one InvalidArgument (400)."""
    try:
        return QueryMsg.model_validate(params)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "message"
            problems.append(f"field[{loc}] {err['msg']} (got {err.get('input')!r})")
        raise InvalidArgument("invalid query: " + "; ".join(problems)) from None
