"""The ZStack-Py version reported by GetVersion and the OpenAPI document (the release, kept in the agent
contract so that the agent reports the same number), with the agent protocol level this controller speaks."""

from kvmagent.contract.version import PROTOCOL_LEVEL, RELEASE

VERSION = RELEASE
__all__ = ["PROTOCOL_LEVEL", "VERSION"]
