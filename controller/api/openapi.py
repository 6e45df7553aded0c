"""OpenAPI 3.1 document generated from the registered API message models."""

from __future__ import annotations

import functools
from typing import Any

from controller import __doc__ as _doc
from controller.api.registry import API
from controller.util import INT64_MAX, INT64_MIN
from controller.version import VERSION


def _bound_integers(node: Any) -> None:
    """Every integer the API takes is a 64-bit SQLite INTEGER: say so where the model sets no bound."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.setdefault("minimum", INT64_MIN)
            node.setdefault("maximum", INT64_MAX)
        for v in node.values():
            _bound_integers(v)
    elif isinstance(node, list):
        for v in node:
            _bound_integers(v)


@functools.cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for name, spec in sorted(API.items()):
        schema = spec.model.model_json_schema(ref_template="#/components/schemas/{model}")
        for dname, d in schema.pop("$defs", {}).items():
            schemas.setdefault(dname, d)
        schema["title"] = name
        schemas[name] = schema
        op: dict[str, Any] = {
            "operationId": name,
            "summary": spec.summary or name,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{name}"}}}},
            "responses": {
                "200": {"description": "success: {success: true, inventory|inventories|...}"},
                "202": {"description": "accepted as a job (?async=true): {jobUuid, location}"},
                "400": {"description": "invalid argument (SYS.1007)"},
                "401": {"description": "no or expired session (ID.1001)"},
                "404": {"description": "resource not found (SYS.1003)"},
                "409": {"description": "state conflict or business rule (SYS.1006, VM.1010)"},
            },
        }
        if spec.session:
            op["security"] = [{"session": []}]
        paths[f"/v1/{name}"] = {"post": op}
        for alias in spec.aliases:
            # 1.0's name (or spelling) of the same API: same body and replies, listed so clients find it
            paths[f"/v1/{alias}"] = {"post": {**op, "operationId": alias,
                                              "summary": f"{spec.summary or name} (1.0 name of {name})"}}
    _bound_integers(schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ZStack-Py API", "version": VERSION,
                 "description": (_doc or "").strip()},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {
            "session": {"type": "apiKey", "in": "header", "name": "Authorization",
                        "description": "OAuth <session uuid> from LogInByAccount"}}},
    }
