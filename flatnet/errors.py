"""flatnet's errors; the agent maps them to AgentError (code and HTTP status) in its handlers."""

from __future__ import annotations


class FlatNetError(Exception):
    """A flatnet operation failed. ``code`` is stable (``NET.*``); ``status`` the HTTP status to report."""

    def __init__(self, code: str, message: str, *, status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotPrepared(FlatNetError):
    def __init__(self, l3_uuid: str) -> None:
        super().__init__("NET.L3_NOT_PREPARED",
                         f"L3 network {l3_uuid} is not prepared on this host: send /flatnet/dhcp/prepare "
                         "(or /flatnet/dhcp/apply with the L3 in 'l3s') first", status=409)
