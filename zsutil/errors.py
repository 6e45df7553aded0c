"""The coded-error base of the data planes and the agent (DESIGN.md "Import direction"; issue #18).

An error raised on purpose carries a stable machine-readable ``code`` (``VM.NOT_FOUND``, ``STORAGE.*``,
``NET.*``), the HTTP ``status`` the agent answers with, a ``message`` naming the field, the value and what is
allowed, and optional ``details``. ``storage``, ``flatnet`` and the agent (``AgentError``) subclass it; the
agent's server maps every :class:`CodedError` to HTTP in one place (``status`` and :meth:`body`), so a
handler never translates one error type into another.
"""

from __future__ import annotations

from typing import Any


class CodedError(Exception):
    status: int = 500
    code: str = "AGENT.INTERNAL"

    def __init__(self, code: str | None, message: str, *, status: int | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.details = details

    def body(self) -> dict[str, Any]:
        """The wire error body (``kvmagent.contract.base.ErrorBody`` inside ``{"error": ...}``)."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details or None}}
