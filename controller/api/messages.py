"""Base classes of API messages (pydantic, ``extra="forbid"``), named and shaped as ZStack 1.0's.

Every message may carry ``session`` and ``timeout``; create messages add ``resourceUuid``,
``systemTags`` and ``userTags``; delete messages add ``deleteMode``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from controller.util import check_int64

UUID_PATTERN = r"^[0-9a-f]{32}$"
Uuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Description = Annotated[str, StringConstraints(max_length=2048)]

# What the OpenAPI schema states for values the handlers check themselves (with 1.0's messages): the schema
# must never be looser than the validation (tests/unit/test_api_fuzz.py).
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_SCHEMA = {"format": "ipv4", "pattern": rf"^({_OCTET}\.){{3}}{_OCTET}$"}
IPv4 = Annotated[str, Field(json_schema_extra=IPV4_SCHEMA)]
NETMASKS = [".".join(str((((1 << 32) - (1 << (32 - p))) >> s) & 255) for s in (24, 16, 8, 0)) for p in range(1, 33)]
Netmask = Annotated[str, Field(json_schema_extra={"enum": NETMASKS})]
DOMAIN_SCHEMA: dict[str, Any] = {"maxLength": 253, "pattern": r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                                              r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"}
Tag = Annotated[str, Field(json_schema_extra={"pattern": r"\S"})]


class ApiMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: dict[str, Any] | str | None = Field(default=None, description="session uuid (or use the "
                                                 "Authorization: OAuth <uuid> header)")
    timeout: int | None = Field(default=None, description="milliseconds to wait for the result")

    @field_validator("*")
    @classmethod
    def _int64(cls, v: Any, info: ValidationInfo) -> Any:
        """No integer beyond SQLite's 64 bits reaches a handler (it would fail in the database, as a 500)."""
        if isinstance(v, int | list | dict) and not isinstance(v, bool) and info.field_name != "session":
            check_int64(v)
        return v


class CreateMessage(ApiMessage):
    resourceUuid: Uuid | None = Field(default=None, description="the uuid the new resource should have")
    systemTags: list[Tag] | None = None
    userTags: list[Tag] | None = None

    @field_validator("systemTags", "userTags")
    @classmethod
    def _no_empty_tags(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for t in v:
                if not t.strip():
                    raise ValueError("a tag cannot be empty")
        return v


class DeleteMessage(ApiMessage):
    deleteMode: Literal["Permissive", "Enforcing"] = "Permissive"


class UuidMessage(ApiMessage):
    uuid: Uuid


class UuidDeleteMessage(DeleteMessage):
    uuid: Uuid


class ChangeStateMessage(ApiMessage):
    uuid: Uuid
    stateEvent: Literal["enable", "disable"]


class UpdateMessage(ApiMessage):
    uuid: Uuid
    name: Name | None = None
    description: Description | None = None
