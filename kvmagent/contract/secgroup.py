"""Wire contract of the security-group endpoints (``/securitygroup/...``).

The controller always sends the host's WHOLE desired rule set (every filtered NIC the host runs or is about
to run) with a generation number that grows with every change the controller makes for that host. The agent
applies it atomically (one ``nft -f``), keeps it (state file) and answers the generation it now enforces.
A push older than the enforced generation is not applied (a late retry must not undo a newer set) unless
``force`` is set (host reconnect: the controller's view wins, e.g. after a database restore).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from kvmagent.contract.base import AgentReply, AgentRequest


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecurityGroupRuleTO(_In):
    """One rule as the host enforces it. ``addresses``: the peers (sources of Ingress, destinations of
    Egress) as CIDRs or IPs, already merged by the controller (allowedCidr, same-group peers on the NIC's
    L3, members of a remote group). ICMP: ``startPort`` is the type, ``endPort`` the code, -1 = any."""

    type: Literal["Ingress", "Egress"]
    protocol: Literal["TCP", "UDP", "ICMP", "ALL"]
    startPort: int = Field(ge=-1, le=65535)
    endPort: int = Field(ge=-1, le=65535)
    addresses: list[str] = []


class SecurityGroupNicTO(_In):
    vmNicUuid: str
    vmInstanceUuid: str
    internalName: str = Field(description="the tap name on the host (vnic<vmInternalId>.<deviceId>)")
    mac: str
    ips: list[str]
    ingressDefaultPolicy: Literal["accept", "deny"] = "deny"
    egressDefaultPolicy: Literal["accept", "deny"] = "accept"
    hostServiceIps: list[str] = Field(default=[], description="the host's flat DHCP/metadata addresses of "
                                      "the NIC's L3 (always reachable)")
    antiSpoofing: bool = True
    rules: list[SecurityGroupRuleTO] = []


class SecurityGroupApplyReply(AgentReply):
    generation: int
    applied: bool = Field(description="false: the host already enforces a newer generation")
    nicCount: int = 0
    ruleCount: int = 0
    seconds: float = 0.0


class SecurityGroupApplyCmd(AgentRequest):
    PATH: ClassVar[str] = "/securitygroup/apply"
    Reply: ClassVar[type[AgentReply]] = SecurityGroupApplyReply
    generation: int = Field(ge=0)
    nics: list[SecurityGroupNicTO] = []
    force: bool = False


class SecurityGroupStatusReply(AgentReply):
    generation: int | None = Field(description="the generation the host enforces (None: never told)")
    inSync: bool = Field(description="the kernel's tables are the ones last applied")
    nicCount: int = 0
    taps: list[str] = []


class SecurityGroupStatusCmd(AgentRequest):
    PATH: ClassVar[str] = "/securitygroup/status"
    Reply: ClassVar[type[AgentReply]] = SecurityGroupStatusReply
