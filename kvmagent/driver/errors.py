"""Errors the hypervisor driver raises on purpose.

They are :class:`~kvmagent.contract.base.AgentError` subclasses, so the agent server maps them to an honest
HTTP status and an ErrorBody without any translation layer in the handlers.
"""

from __future__ import annotations

from typing import Any

from kvmagent.contract.base import AgentError


class DomainNotFound(AgentError):
    """The VM has no libvirt domain on this host (404 ``VM.NOT_FOUND``)."""

    def __init__(self, vm_uuid: str, doing: str = "") -> None:
        what = f" (while {doing})" if doing else ""
        super().__init__("VM.NOT_FOUND", f"VM {vm_uuid} has no domain on this host{what}",
                         status=404, details={"vmUuid": vm_uuid})


class StateConflict(AgentError):
    """The domain exists in a state or configuration that forbids the request (409 ``VM.STATE_CONFLICT``)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__("VM.STATE_CONFLICT", message, status=409, details=details or None)


class InvalidSpec(AgentError):
    """The VM spec cannot run on this host (400 ``VM.INVALID_SPEC``), detected before anything is defined."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__("VM.INVALID_SPEC", f"{field}={value!r} is not allowed: {reason}", status=400,
                         details={"field": field, "value": value})


class HypervisorError(AgentError):
    """libvirt refused or failed an operation (500 ``VIRT.LIBVIRT_ERROR``); the message is libvirt's own."""

    def __init__(self, doing: str, message: str, *, libvirt_code: int | None = None) -> None:
        super().__init__("VIRT.LIBVIRT_ERROR", f"{doing}: {message}", status=500,
                         details={"libvirtCode": libvirt_code} if libvirt_code is not None else None)


class HypervisorUnavailable(AgentError):
    """The libvirt connection is not open (503 ``VIRT.UNAVAILABLE``); the agent is reconnecting."""

    def __init__(self, reason: str) -> None:
        super().__init__("VIRT.UNAVAILABLE", f"libvirt is not connected: {reason}", status=503)
