"""flatnet's errors, coded errors (``zsutil.errors``): the agent's server answers them with their code and
HTTP status like any agent error."""

from __future__ import annotations

from zsutil.errors import CodedError


class FlatNetError(CodedError):
    """A flatnet operation failed. ``code`` is stable (``NET.*``); ``status`` the HTTP status to report."""

    code = "NET.INTERNAL"


class NotPrepared(FlatNetError):
    def __init__(self, l3_uuid: str) -> None:
        super().__init__("NET.L3_NOT_PREPARED",
                         f"L3 network {l3_uuid} is not prepared on this host: send /flatnet/dhcp/prepare "
                         "(or /flatnet/dhcp/apply with the L3 in 'l3s') first", status=409)
