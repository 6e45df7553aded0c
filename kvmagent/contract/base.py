"""Envelope shared by every agent endpoint.

Wire rules:
* ``POST <PATH>`` with the request model as a JSON object, header ``Authorization: Bearer <host token>``
  and header ``X-Request-Id: <uuid>`` (the agent deduplicates: a repeated id returns the first reply
  without running the command again).
* Success: HTTP 200 with the reply model as JSON.
* Failure: an honest HTTP status (400 bad request, 401 token, 404 unknown path or resource, 409 state
  conflict, 500 internal, 503 not ready) with ``{"error": {"code": ..., "message": ..., "details": ...}}``.
  Failures are never a 200 with ``success: false``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from zsutil.errors import CodedError


class AgentReply(BaseModel):
    """Base of every reply. Replies may grow fields; the controller ignores unknown ones."""

    model_config = ConfigDict(extra="ignore")


class AgentRequest(BaseModel):
    """Base of every request. ``PATH`` is the endpoint; ``Reply`` the reply model; ``IDEMPOTENT`` tells the
    controller's client whether a timed-out call may be retried with the same request id."""

    model_config = ConfigDict(extra="forbid")

    PATH: ClassVar[str] = ""
    Reply: ClassVar[type[AgentReply]] = AgentReply
    IDEMPOTENT: ClassVar[bool] = True


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class AgentError(CodedError):
    """An error an agent handler raises on purpose; the server maps it (like every
    :class:`~zsutil.errors.CodedError`, e.g. ``storage``'s and ``flatnet``'s errors) to ``status`` and an
    ErrorBody.

    ``code`` is a stable machine-readable string such as ``VM.NOT_FOUND``, ``STORAGE.NO_SPACE``,
    ``NET.DNSMASQ_FAILED``; the controller maps agent errors to ZStack error codes.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(code, message, status=status, details=details)


# Paths the controller polls every few seconds (ping, state sync, capacity): both sides log them at DEBUG only.
POLLED_PATHS = frozenset({"/host/ping", "/vm/vmsync", "/host/capacity", "/localstorage/capacity"})
