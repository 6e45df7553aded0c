"""The storage data plane's error hierarchy.

``storage`` imports neither ``kvmagent`` nor ``controller``, so it has its own errors; the agent's storage
handlers map every :class:`StorageError` to an ``AgentError`` with the same ``code``, ``status`` and
``details``. Messages name the field, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """Base: ``code`` is stable (``STORAGE.*``), ``status`` the HTTP status the agent should answer with."""

    status = 500
    code = "STORAGE.INTERNAL"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class InvalidArgument(StorageError):
    """Bad input from the caller (a path outside the storage, a malformed uuid, a bad URL...)."""

    status = 400
    code = "STORAGE.INVALID_ARGUMENT"


class UnsafeImage(StorageError):
    """A user-supplied image failed inspection (format, backing file, data file, json: name...)."""

    status = 400
    code = "STORAGE.UNSAFE_IMAGE"


class NotFound(StorageError):
    status = 404
    code = "STORAGE.NOT_FOUND"


class Conflict(StorageError):
    """The request contradicts what is on disk (e.g. a volume exists with another backing file)."""

    status = 409
    code = "STORAGE.CONFLICT"


class ChecksumMismatch(StorageError):
    status = 409
    code = "STORAGE.CHECKSUM_MISMATCH"


class TransferFailed(StorageError):
    """A download or a host-to-host copy failed (network, remote agent, source)."""

    status = 502
    code = "STORAGE.TRANSFER_FAILED"
