"""What the CLI knows about the controller's APIs: names, parameters and their types.

The source of truth is the controller's OpenAPI document (``GET /v1/openapi.json``). It is reduced to a
small table (API name -> parameter name -> :class:`Param`) and cached in ``<cli home>/api-cache.json``,
keyed by the controller's version (``info.version``), with a map from controller URL to version.

Before any schema is available (no cache, controller without an OpenAPI document) the CLI falls back to
ZStack 1.0's own knowledge (reference §1.6): which parameter names are lists (split on commas) and which
are literals (JSON or Python-literal dicts and lists). With the fallback, API names are not checked.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: 1.0's list-typed parameters (``OptionalList``/``NotNoneList`` in the 1.0 python binding).
FALLBACK_LIST_PARAMS = frozenset(
    {
        "l3NetworkUuids",
        "systemTags",
        "userTags",
        "backupStorageUuids",
        "bootOrder",
        "dataDiskOfferingUuids",
        "uuids",
        "resourceUuids",
        "vmNicUuids",
        "dns",
    }
)

#: 1.0's literal-valued parameters (evaluated as Python literals by the 1.0 CLI), with their type.
FALLBACK_LITERAL_PARAMS: Mapping[str, str] = {
    "networkServices": "object",
    "rules": "array",
    "statements": "array",
}

#: APIs that need no session (reference §1.5).
NO_SESSION_APIS = frozenset({"LogInByAccount", "LogInByUser", "LogOut", "ValidateSession", "GetVersion"})

_API_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
_SCALARS = ("string", "integer", "number", "boolean", "array", "object")
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Param:
    """One parameter of one API as the CLI needs it.

    ``type`` is one of ``string integer number boolean array object``; ``items`` is the item type of an
    array (``string`` when unknown); ``choices`` lists an enum's allowed values.
    """

    name: str
    type: str = "string"
    required: bool = False
    items: str = "string"
    description: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiSchema:
    """The APIs of one controller version; ``known`` is False for the built-in fallback."""

    version: str
    apis: Mapping[str, Mapping[str, Param]] = field(default_factory=dict)
    known: bool = True

    def names(self) -> list[str]:
        """Sorted API names (empty for the fallback)."""
        return sorted(self.apis)

    def has_api(self, api: str) -> bool:
        """True when the API exists; with the fallback, any CamelCase name is accepted."""
        if not self.known:
            return bool(_API_NAME.fullmatch(api))
        return api in self.apis

    def params(self, api: str) -> Mapping[str, Param] | None:
        """The parameters of ``api``, or None when they are not known (fallback or empty schema)."""
        params = self.apis.get(api)
        return params if params else None

    def param(self, api: str, name: str) -> Param:
        """The parameter ``name`` of ``api``: from the schema, else from 1.0's fallback tables."""
        params = self.apis.get(api) or {}
        if name in params:
            return params[name]
        if name in FALLBACK_LITERAL_PARAMS:
            kind = FALLBACK_LITERAL_PARAMS[name]
            return Param(name, kind, items="object" if kind == "array" else "string")
        if name in FALLBACK_LIST_PARAMS:
            return Param(name, "array")
        return Param(name)


def fallback() -> ApiSchema:
    """The schema used before the controller's OpenAPI document is known."""
    return ApiSchema(version="", apis={}, known=False)


# --------------------------------------------------------------------------- OpenAPI -> ApiSchema


def _deref(node: Any, components: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """Follow ``$ref`` chains to ``#/components/schemas/<Name>`` (bounded, cycles give ``{}``)."""
    while isinstance(node, dict) and "$ref" in node and depth < 16:
        ref = str(node["$ref"])
        node = components.get(ref.rsplit("/", 1)[-1], {})
        depth += 1
    return node if isinstance(node, dict) else {}


def _type_of(node: Any, components: Mapping[str, Any], depth: int = 0) -> tuple[str, dict[str, Any]]:
    """The JSON type of a property schema (``anyOf`` with null = optional) and its resolved node."""
    node = _deref(node, components)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if isinstance(kind, str) and kind in _SCALARS:
        return kind, node
    for key in ("anyOf", "oneOf", "allOf"):
        branches = [b for b in node.get(key, []) if _deref(b, components).get("type") != "null"]
        if branches and depth < 8:
            return _type_of(branches[0], components, depth + 1)
    if "properties" in node or "additionalProperties" in node:
        return "object", node
    return "string", node


def _param(name: str, prop: Any, required: bool, components: Mapping[str, Any]) -> Param:
    kind, node = _type_of(prop, components)
    items = _type_of(node.get("items", {}), components)[0] if kind == "array" else "string"
    enum = node.get("enum") or []
    description = str(_deref(prop, components).get("description") or node.get("description") or "")
    return Param(name, kind, required, items, description, tuple(str(v) for v in enum))


def from_openapi(doc: Mapping[str, Any]) -> ApiSchema:
    """Reduce an OpenAPI 3.1 document to an :class:`ApiSchema`.

    Every ``POST /v1/<ApiName>`` path whose request body is a JSON schema becomes an API; other paths
    (jobs, agent events, the document itself) are ignored. Raises ValueError when ``doc`` is not OpenAPI.
    """
    if not isinstance(doc.get("paths"), dict):
        raise ValueError("not an OpenAPI document: no 'paths' object")
    components = (doc.get("components") or {}).get("schemas") or {}
    apis: dict[str, dict[str, Param]] = {}
    for path, item in doc["paths"].items():
        name = str(path).removeprefix("/v1/")
        if not _API_NAME.fullmatch(name) or not isinstance(item, dict) or "post" not in item:
            continue
        content = ((item["post"] or {}).get("requestBody") or {}).get("content") or {}
        body = _deref((content.get("application/json") or {}).get("schema", {}), components)
        required = set(body.get("required") or [])
        props = body.get("properties") or {}
        apis[name] = {p: _param(p, spec, p in required, components) for p, spec in props.items()}
    version = str((doc.get("info") or {}).get("version") or "unknown")
    return ApiSchema(version=version, apis=apis, known=True)


# --------------------------------------------------------------------------- cache


class SchemaCache:
    """``api-cache.json``: ``{"format": 1, "controllers": {url: version}, "schemas": {version: ...}}``.

    Reads never raise (a missing or corrupt cache is simply empty); writes are atomic (temp file +
    rename) and leave the file readable only by its owner.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return {}
        return data

    def load(self, url: str) -> ApiSchema | None:
        """The cached schema of the controller at ``url``, or None."""
        data = self._read()
        version = (data.get("controllers") or {}).get(url)
        raw = (data.get("schemas") or {}).get(version) if version is not None else None
        if not isinstance(raw, dict):
            return None
        try:
            apis = {api: {n: _param_from_cache(spec) for n, spec in ps.items()} for api, ps in raw.items()}
        except (TypeError, AttributeError):
            return None
        return ApiSchema(version=str(version), apis=apis, known=True)

    def store(self, url: str, schema: ApiSchema) -> None:
        """Record ``schema`` as the one of ``url`` (and of its version)."""
        data = self._read() or {"format": CACHE_FORMAT}
        data.setdefault("controllers", {})[url] = schema.version
        data.setdefault("schemas", {})[schema.version] = {
            api: {name: asdict(p) for name, p in params.items()} for api, params in schema.apis.items()
        }
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".api-cache.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _param_from_cache(spec: dict[str, Any]) -> Param:
    return Param(**{**spec, "choices": tuple(spec.get("choices", ()))})


def describe(schema: ApiSchema, api: str) -> str:
    """``help <Api>`` text: one line per parameter with type, required flag, choices and description."""
    params = schema.params(api)
    if params is None:
        return f"{api}: parameters unknown (the controller's API schema is not available)"
    lines = [f"{api}:"]
    for p in sorted(params.values(), key=lambda p: (not p.required, p.name)):
        kind = f"list of {p.items}" if p.type == "array" else p.type
        flag = "required" if p.required else "optional"
        extra = f" one of {', '.join(p.choices)}" if p.choices else ""
        text = f" - {p.description}" if p.description else ""
        lines.append(f"  {p.name:<28} {kind:<16} {flag}{extra}{text}")
    return "\n".join(lines)
