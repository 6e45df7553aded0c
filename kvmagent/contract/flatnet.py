"""Wire contract of the flat network provider's agent endpoints (``/flatnet/...``). Every request is
idempotent: repeating it converges to the same state."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from kvmagent.contract.base import AgentReply, AgentRequest


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: a Linux interface name as ebtables/ip take it (pydantic's pattern matches the whole value)
IFNAME = r"^[A-Za-z0-9_.:-]{1,15}$"


class FlatL3(_In):
    l3NetworkUuid: str = Field(min_length=1)
    bridgeName: str = Field(pattern=IFNAME)
    physicalInterface: str | None = Field(default=None, pattern=IFNAME)
    dhcpServerIp: str
    netmask: str
    gateway: str | None = None
    dns: list[str] = []
    dnsDomain: str | None = None
    antiSpoofing: bool = True


class FlatNic(_In):
    vmUuid: str
    l3NetworkUuid: str
    mac: str
    ip: str
    netmask: str
    gateway: str | None = None
    hostname: str | None = None
    isDefaultL3Network: bool = True
    tapName: str | None = Field(default=None, pattern=IFNAME)


class FlatNicRef(_In):
    l3NetworkUuid: str
    mac: str


class FlatNicEntry(BaseModel):
    vmUuid: str
    mac: str
    ip: str


class FlatL3Status(BaseModel):
    l3NetworkUuid: str
    namespace: str
    bridgeName: str
    dhcpServerIp: str
    dnsmasqPid: int | None
    nicCount: int
    userdataCount: int
    listening: list[str]
    error: str | None = None
    #: the NICs in the L3's DHCP hosts, and the VMs user data is served to (consistency check)
    entries: list[FlatNicEntry] = []
    userdataVms: list[str] = []


class FlatDhcpPrepareReply(AgentReply):
    pass


class FlatDhcpPrepareCmd(AgentRequest):
    PATH: ClassVar[str] = "/flatnet/dhcp/prepare"
    Reply: ClassVar[type[AgentReply]] = FlatDhcpPrepareReply
    l3s: list[FlatL3]


class FlatDhcpApplyReply(AgentReply):
    pass


class FlatDhcpApplyCmd(AgentRequest):
    """Serve ``nics`` (and set up ``l3s``); ``rebuild`` replaces this host's whole desired set."""

    PATH: ClassVar[str] = "/flatnet/dhcp/apply"
    Reply: ClassVar[type[AgentReply]] = FlatDhcpApplyReply
    l3s: list[FlatL3] = []
    nics: list[FlatNic] = []
    rebuild: bool = False


class FlatDhcpReleaseReply(AgentReply):
    pass


class FlatDhcpReleaseCmd(AgentRequest):
    PATH: ClassVar[str] = "/flatnet/dhcp/release"
    Reply: ClassVar[type[AgentReply]] = FlatDhcpReleaseReply
    nics: list[FlatNicRef]


class FlatUserdataApplyReply(AgentReply):
    pass


class FlatAddress(_In):
    l3NetworkUuid: str
    ip: str


class FlatUserdataApplyCmd(AgentRequest):
    """Metadata/user data of one VM on its default L3 (the L3 must be prepared on this host), also served on
    ``addresses``: the VM's NICs on its other L3s with the Flat Userdata service. The agent serves an address
    only where the source IP is trustworthy: the NIC is served by Flat DHCP on this host with anti-spoofing."""

    PATH: ClassVar[str] = "/flatnet/userdata/apply"
    Reply: ClassVar[type[AgentReply]] = FlatUserdataApplyReply
    vmUuid: str = Field(min_length=1)
    l3NetworkUuid: str
    vmIp: str
    userdata: str | None = None
    sshKeys: list[str] = []
    rootPassword: str | None = None
    hostname: str | None = None
    instanceId: str | None = None
    serviceOffering: str | None = None
    availabilityZone: str | None = None
    addresses: list[FlatAddress] = []


class FlatUserdataReleaseReply(AgentReply):
    pass


class FlatUserdataReleaseCmd(AgentRequest):
    PATH: ClassVar[str] = "/flatnet/userdata/release"
    Reply: ClassVar[type[AgentReply]] = FlatUserdataReleaseReply
    vmUuid: str = Field(min_length=1)


class FlatStatusReply(AgentReply):
    l3s: list[FlatL3Status] = []


class FlatStatusCmd(AgentRequest):
    PATH: ClassVar[str] = "/flatnet/status"
    Reply: ClassVar[type[AgentReply]] = FlatStatusReply
