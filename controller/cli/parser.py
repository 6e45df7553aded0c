"""ZStack 1.0's CLI syntax: one command line -> (API name, JSON body). Pure: no I/O.

Rules (reference §1.6, with ZStack-Py's documented differences):

* The line is split with :mod:`shlex` (POSIX quoting: ``systemTags='userdata::...'`` is one token). The
  first token is the API name; every other token is ``name=value``, split on the FIRST ``=``.
* ``Query*`` APIs: the tokens ``conditions count limit start timeout replyWithCount sortBy sortDirection
  fields`` (with a plain ``=``) are message fields; every other token is a condition ``name<op>value`` with
  the operators of :data:`OPERATORS` (longest match first: ``!?=`` before ``?=`` before ``!=``; ``>=``
  before ``>``). ``a=null``/``a!=null`` mean ``is null``/``is not null`` (value ""); ``~=``/``!~=`` wrap a
  value containing neither ``%`` nor ``_`` in ``%...%``; ``?=``/``!?=`` send the comma-joined string.
* Other APIs: the parameter's type comes from the controller's schema, else 1.0's fallback tables.
  ``array`` values are split on commas and empty items dropped (so ``fields=a,`` is ``["a"]``); a value
  written as a JSON list (``'["a","b"]'``) is taken as is. **Tag lists** (``systemTags``, ``userTags``)
  split on a comma ONLY when the text after it starts a new tag, i.e. matches ``<word>::`` where word is
  ``[A-Za-z][A-Za-z0-9_.-]*``: ``userdata::...[foo,bar]...`` stays one tag, ``hostname::a,staticIp::x::y``
  is two; trailing commas are dropped. ``object`` values (``networkServices``) are JSON or a Python
  literal (``ast.literal_eval``, never ``eval``). ``integer``/``number``/``boolean`` values are converted
  and checked. Without a schema (1.0 fallback) scalars are sent as strings, as 1.0 did.
* ``password`` of LogInByAccount/LogInByUser/CreateAccount/CreateUser/UpdateAccount/UpdateUser is sent as
  its SHA-512 hex digest, as 1.0 did.

Every mistake raises :class:`UsageError` whose message names the token, the value and what is allowed.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from controller.cli.schema import ApiSchema, Param

#: CLI operator -> operator sent to the controller, longest first (the order matters for matching).
OPERATORS: tuple[tuple[str, str], ...] = (
    ("!?=", "not in"),
    ("?=", "in"),
    ("!~=", "not like"),
    ("~=", "like"),
    ("!=", "!="),
    (">=", ">="),
    ("<=", "<="),
    ("=", "="),
    (">", ">"),
    ("<", "<"),
)
QUERY_RESERVED = ("conditions", "count", "limit", "start", "timeout", "replyWithCount", "sortBy",
                  "sortDirection", "fields")
PASSWORD_APIS = frozenset(
    {"LogInByAccount", "LogInByUser", "CreateAccount", "CreateUser", "UpdateAccount", "UpdateUser"}
)
TAG_PARAMS = frozenset({"systemTags", "userTags"})

_OP_ALTERNATION = "|".join(re.escape(op) for op, _ in OPERATORS)
_CONDITION = re.compile(rf"([A-Za-z_][A-Za-z0-9_.]*)({_OP_ALTERNATION})(.*)", re.DOTALL)
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NEW_TAG = re.compile(r",+(?=[A-Za-z][A-Za-z0-9_.-]*::)|,+$")
_RESERVED_TYPES = {"count": "boolean", "replyWithCount": "boolean", "limit": "integer", "start": "integer",
                   "timeout": "integer", "fields": "array", "conditions": "array"}


class UsageError(ValueError):
    """A command line the CLI cannot turn into an API call; the message is meant for the operator."""


class UnknownApiError(UsageError):
    """The first token is not an API of the controller (maybe the cached schema is stale)."""


class UnknownParamError(UsageError):
    """A parameter the API does not have (maybe the cached schema is stale)."""


@dataclass(frozen=True)
class Command:
    """One API call: the API name and its JSON body."""

    api: str
    body: dict[str, Any]


def hash_password(password: str) -> str:
    """SHA-512 hex digest of a clear-text password (what 1.0 sends and stores)."""
    return hashlib.sha512(password.encode()).hexdigest()


def split_line(line: str) -> list[str]:
    """Tokenize like 1.0 (``shlex.split``, POSIX rules, no comments)."""
    try:
        return shlex.split(line)
    except ValueError as e:
        raise UsageError(f"cannot split the command line: {e} (check the quotes)") from None


def parse_line(line: str, schema: ApiSchema) -> Command:
    """Parse one command line; raises UsageError for an empty line or a bad token."""
    return parse_tokens(split_line(line), schema)


def parse_tokens(tokens: list[str], schema: ApiSchema) -> Command:
    """Parse already-split tokens (the first is the API name)."""
    if not tokens:
        raise UsageError("empty command: give an API name, e.g. QueryZone")
    api = tokens[0]
    check_api(api, schema)
    if api.startswith("Query"):
        body = _query_body(tokens[1:])
    else:
        body = _action_body(api, tokens[1:], schema)
    if api in PASSWORD_APIS and isinstance(body.get("password"), str):
        body["password"] = hash_password(body["password"])
    return Command(api, body)


def check_api(api: str, schema: ApiSchema) -> None:
    """Raise UnknownApiError naming close matches when ``api`` is not an API."""
    if schema.has_api(api):
        return
    names = schema.names()
    same_case = [n for n in names if n.lower() == api.lower()]
    close = same_case or difflib.get_close_matches(api, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; type 'help' to list the APIs"
    raise UnknownApiError(f'"{api}" is not an API{hint}')


def _split_param(token: str) -> tuple[str, str]:
    name, eq, value = token.partition("=")
    if not eq:
        raise UsageError(f'"{token}" is not a parameter: expected name=value')
    if not _PARAM_NAME.fullmatch(name):
        raise UsageError(f'"{token}": "{name}" is not a valid parameter name')
    return name, value


# --------------------------------------------------------------------------- queries


def parse_condition(token: str) -> dict[str, str]:
    """``name<op>value`` -> ``{"name", "op", "value"}`` as 1.0 sends it."""
    match = _CONDITION.fullmatch(token)
    if not match:
        ops = " ".join(op for op, _ in OPERATORS)
        raise UsageError(f'"{token}" is not a query condition: expected name<op>value with op one of {ops}')
    name, cli_op, value = match.groups()
    op = dict(OPERATORS)[cli_op]
    if cli_op == "=" and value == "null":
        op, value = "is null", ""
    elif cli_op == "!=" and value == "null":
        op, value = "is not null", ""
    elif op in ("like", "not like") and "%" not in value and "_" not in value:
        value = f"%{value}%"
    return {"name": name, "op": op, "value": value}


def _query_body(tokens: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"conditions": []}
    extra_conditions: list[Any] = []
    for token in tokens:
        name, eq, value = token.partition("=")
        if eq and name in QUERY_RESERVED:
            if name == "conditions":
                extra_conditions.extend(_literal_list(name, value))
            else:
                body[name] = convert(Param(name, _RESERVED_TYPES.get(name, "string")), value)
        else:
            body["conditions"].append(parse_condition(token))
    body["conditions"] = extra_conditions + body["conditions"]
    return body


# --------------------------------------------------------------------------- other APIs


def _action_body(api: str, tokens: list[str], schema: ApiSchema) -> dict[str, Any]:
    body: dict[str, Any] = {}
    known = schema.params(api)
    for token in tokens:
        name, value = _split_param(token)
        if known is not None and name not in known:
            close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else f"it takes: {', '.join(sorted(known))}"
            raise UnknownParamError(f'"{name}" is not a parameter of {api}; {hint}')
        param = schema.param(api, name)
        converted = convert(param, value)
        if name in body:
            if param.type != "array":
                raise UsageError(f'parameter "{name}" of {api} is given twice')
            body[name] = body[name] + converted
        else:
            body[name] = converted
    return body


def convert(param: Param, value: str) -> Any:
    """Convert one CLI value to the parameter's JSON type; UsageError names the field and the value."""
    kind = param.type
    if kind == "array":
        return _to_list(param, value)
    if kind == "object":
        parsed = _literal(param.name, value)
        if not isinstance(parsed, dict):
            raise UsageError(f'{param.name}="{value}": expected a dict such as \'{{"<uuid>":["DHCP"]}}\'')
        return parsed
    if kind == "integer":
        try:
            return int(value)
        except ValueError:
            raise UsageError(f'{param.name}="{value}": expected an integer') from None
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            raise UsageError(f'{param.name}="{value}": expected a number') from None
    if kind == "boolean":
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise UsageError(f'{param.name}="{value}": expected true or false')
        return lowered == "true"
    return value


def _to_list(param: Param, value: str) -> list[Any]:
    if param.items == "object" or (value.startswith("[") and value.endswith("]")):
        parsed = _literal(param.name, value, strict=param.items == "object")
        if isinstance(parsed, list):
            return parsed
    if param.name in TAG_PARAMS:
        items = split_tags(value)
    else:
        items = [item for item in value.split(",") if item != ""]
    if param.items in ("integer", "number", "boolean"):
        return [convert(Param(param.name, param.items), item) for item in items]
    return items


def split_tags(value: str) -> list[str]:
    """Split a tag list on the commas that start a new tag (``,<word>::``) and drop trailing commas.

    Any other comma is part of the tag: ``userdata::a: [foo,bar]`` is one tag.
    """
    return [tag for tag in _NEW_TAG.split(value) if tag != ""]


def _literal(name: str, value: str, strict: bool = True) -> Any:
    """JSON first, then a Python literal (1.0's form); never ``eval``."""
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if not strict:
            return None
        raise UsageError(
            f'{name}="{value}": not valid JSON or a Python literal, e.g. \'{{"<uuid>":["DHCP","Userdata"]}}\''
        ) from None


def _literal_list(name: str, value: str) -> list[Any]:
    parsed = _literal(name, value)
    if not isinstance(parsed, list):
        example = '[{"name":"uuid","op":"=","value":"x"}]'
        raise UsageError(f'{name}="{value}": expected a list such as \'{example}\'')
    return parsed
