"""One error hierarchy for the controller, mapped to HTTP in one place (``controller.api.middleware``).

Every error carries an honest HTTP status and a ZStack 1.0 error code. Messages name the field or
resource, the value, and what is allowed or what to do.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status: int = 500
    code: str = "SYS.1000"
    description: str = "an internal error happened"

    def __init__(self, details: str, *, code: str | None = None, status: int | None = None,
                 cause: dict[str, Any] | None = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.cause = cause

    def body(self) -> dict[str, Any]:
        return {"success": False, "error": {
            "code": self.code, "description": self.description, "details": self.details,
            "elaboration": None, "cause": self.cause}}


class InvalidArgument(ApiError):
    """A parameter is missing, of the wrong type, or outside its valid values (400, SYS.1007)."""

    status, code, description = 400, "SYS.1007", "One or more API argument is invalid"


class UnknownApi(ApiError):
    status, code, description = 404, "SYS.1008", "unknown message"


class NotFound(ApiError):
    """A referenced resource does not exist (404, SYS.1003)."""

    status, code, description = 404, "SYS.1003", "Resource could not be found"


class OperationError(ApiError):
    """A business rule forbids the operation in the current situation (409, SYS.1006)."""

    status, code, description = 409, "SYS.1006", "An operation failed"


class StateConflict(OperationError):
    """The resource's state forbids the operation (409; VM.1010 for VMs)."""

    description = "The resource state does not allow this operation"


class CreateFailed(ApiError):
    status, code, description = 500, "SYS.1002", "Failed to create a resource"


class Timeout(ApiError):
    status, code, description = 504, "SYS.1001", "The operation timed out"


class AuthenticationFailed(ApiError):
    status, code, description = 401, "ID.1000", "Authentication failed"


class InvalidSession(ApiError):
    status, code, description = 401, "ID.1001", "Session expired"


class PermissionDenied(ApiError):
    status, code, description = 403, "ID.1002", "Permission denied"


class TooManyLoginFailures(ApiError):
    status, code, description = 429, "ID.1004", "Too many failed logins"


class QuotaExceeded(ApiError):
    status, code, description = 409, "ID.1003", "Quota exceeded"


class AgentUnavailable(ApiError):
    """The host's agent could not be reached or is not ready (503)."""

    status, code, description = 503, "SYS.1012", "The host agent is unavailable"


class AgentFailure(ApiError):
    """The host's agent answered with an error (502); ``cause`` carries the agent's error body."""

    status, code, description = 502, "SYS.1006", "The host agent failed the operation"


class HostReconnectFailed(ApiError):
    status, code, description = 502, "HOST.1002", "Failed to reconnect the host"


class VmStartFailed(ApiError):
    status, code, description = 502, "HOST.1005", "Failed to start the VM on the hypervisor"


def vm_state_error(uuid: str, state: str, api: str, allowed: list[str]) -> StateConflict:
    """1.0's VM.1010 message for an operation the VM's state does not allow."""
    return StateConflict(
        f"current vm instance[uuid:{uuid}] state[{state}] doesn't allow to proceed message[{api}], "
        f"allowed states are {allowed}", code="VM.1010")
