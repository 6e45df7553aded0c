"""Host endpoints: connect, ping, facts, capacity, bridge check."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from kvmagent.contract.base import AgentReply, AgentRequest


class HostFactsReply(AgentReply):
    cpuNum: int
    cpuSpeed: int = Field(description="MHz")
    cpuModel: str
    totalMemory: int = Field(description="bytes")
    libvirtVersion: str
    qemuVersion: str
    hvmCpuFlag: str | None = Field(description="vmx, svm or null (no hardware virtualization)")
    domainType: str = Field(description="kvm or qemu (TCG)")
    hypervisor: str
    liveSnapshot: bool = Field(False, description="live disk snapshots work here (tag capability:liveSnapshot)")
    # Optional (agents before 0.2.0 do not send them): the agent's release, protocol level and source digest.
    agentVersion: str | None = Field(None, description="the agent's release (kvmagent.contract.version.RELEASE)")
    agentProtocol: int | None = Field(None, description="the agent's protocol level; absent means 0")
    agentDigest: str | None = Field(None, description="sha256 of the installed agent sources")


class ConnectReply(HostFactsReply):
    hostUuid: str
    bootId: str


class ConnectCmd(AgentRequest):
    """The controller takes the host over: the agent reports to ``controllerUrl`` from now on."""

    PATH: ClassVar[str] = "/host/connect"
    Reply: ClassVar[type[AgentReply]] = ConnectReply
    hostUuid: str = Field(min_length=1)
    controllerUrl: str = Field(pattern=r"^https?://")


class PingReply(AgentReply):
    hostUuid: str
    bootId: str = Field(description="changes whenever the agent restarts")
    ready: bool


class PingCmd(AgentRequest):
    PATH: ClassVar[str] = "/host/ping"
    Reply: ClassVar[type[AgentReply]] = PingReply


class FactsCmd(AgentRequest):
    PATH: ClassVar[str] = "/host/facts"
    Reply: ClassVar[type[AgentReply]] = HostFactsReply


class CapacityReply(AgentReply):
    cpuNum: int
    cpuSpeed: int = Field(description="MHz")
    usedCpu: int = Field(description="vCPUs of running domains")
    totalMemory: int = Field(description="bytes")
    usedMemory: int = Field(description="bytes of running domains")


class CapacityCmd(AgentRequest):
    PATH: ClassVar[str] = "/host/capacity"
    Reply: ClassVar[type[AgentReply]] = CapacityReply


class CheckBridgeReply(AgentReply):
    bridgeName: str
    exists: bool = True


class CheckBridgeCmd(AgentRequest):
    """404 ``NET.BRIDGE_NOT_FOUND`` when the bridge does not exist."""

    PATH: ClassVar[str] = "/host/checkbridge"
    Reply: ClassVar[type[AgentReply]] = CheckBridgeReply
    bridgeName: str = Field(min_length=1, max_length=15, pattern=r"^[A-Za-z0-9_.:-]+$")
