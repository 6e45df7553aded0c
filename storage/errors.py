"""The storage data plane's error hierarchy.

:class:`StorageError` is a :class:`~zsutil.errors.CodedError`: the agent's server answers it with its
``code``, ``status`` and ``details`` like any agent error. Messages name the field, the value and what is
allowed.
"""

from __future__ import annotations

from typing import Any

from zsutil.errors import CodedError


class StorageError(CodedError):
    """Base: ``code`` is stable (``STORAGE.*``), ``status`` the HTTP status the agent should answer with."""

    status = 500
    code = "STORAGE.INTERNAL"
    details: dict[str, Any]

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(code, message, details=details or {})


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
