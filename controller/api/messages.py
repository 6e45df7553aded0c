"""Base classes of API messages (pydantic, ``extra="forbid"``), named and shaped as ZStack 1.0's.

Every message may carry ``session`` and ``timeout``; create messages add ``resourceUuid``,
``systemTags`` and ``userTags``; delete messages add ``deleteMode``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

UUID_PATTERN = r"^[0-9a-f]{32}$"
Uuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Description = Annotated[str, StringConstraints(max_length=2048)]


class ApiMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session: dict[str, Any] | str | None = Field(default=None, description="session uuid (or use the "
                                                 "Authorization: OAuth <uuid> header)")
    timeout: int | None = Field(default=None, description="milliseconds to wait for the result")


class CreateMessage(ApiMessage):
    resourceUuid: Uuid | None = Field(default=None, description="the uuid the new resource should have")
    systemTags: list[str] | None = None
    userTags: list[str] | None = None

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
