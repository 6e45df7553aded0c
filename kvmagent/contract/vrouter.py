"""``/vrouter/call``: the host agent relays one call of the controller to a virtual router's agent over the
router domain's virtio-serial channel (the unix socket QEMU binds at ``<state_dir>/vrouter/<vmUuid>.sock``),
so the controller needs no route to the router's management NIC (DESIGN.md "Virtual router")."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from kvmagent.contract.base import AgentReply, AgentRequest
from kvmagent.contract.vm import UUID_PATTERN, Uuid


class VRouterCallReply(AgentReply):
    status: int = Field(description="the router agent's HTTP status")
    body: dict[str, Any] = {}


class VRouterCallCmd(AgentRequest):
    """POST ``body`` to ``path`` on the router agent of VM ``vmUuid``, with the router's bearer token.
    503 VROUTER.UNREACHABLE when the channel does not answer within ``timeout``."""

    PATH: ClassVar[str] = "/vrouter/call"
    Reply: ClassVar[type[AgentReply]] = VRouterCallReply
    vmUuid: Uuid = Field(pattern=UUID_PATTERN)
    path: str = Field(pattern=r"^/(init|ping|apply|upgrade)$")
    body: dict[str, Any] = {}
    token: str = Field(min_length=32, max_length=128, repr=False)
    timeout: float = Field(30, gt=0, le=600)
    #: ``/init`` only: retry until the agent answers (it is booting), up to ``timeout``
    waitReady: bool = False


class IpProbe(BaseModel):
    bridgeName: str = Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.:-]+$")
    ip: IPv4Address


class IpProbeResult(BaseModel):
    bridgeName: str
    ip: str
    #: False: the bridge does not exist on this host (nothing probed)
    probed: bool
    #: the MAC that answered for the address, None when nobody did
    mac: str | None = None


class VRouterProbeIpsReply(AgentReply):
    results: list[IpProbeResult] = []


class VRouterProbeIpsCmd(AgentRequest):
    """ARP-probe each address on its bridge (RFC 5227 probes, all at once, bounded by ``timeout``): is it
    already used on that L2? Asked before a virtual router takes its addresses (1.0 pinged the management IP
    from the management node: APPLIANCE_VM.1000)."""

    PATH: ClassVar[str] = "/vrouter/probeips"
    Reply: ClassVar[type[AgentReply]] = VRouterProbeIpsReply
    probes: list[IpProbe] = Field(max_length=16)
    timeout: float = Field(1.5, gt=0, le=5)
