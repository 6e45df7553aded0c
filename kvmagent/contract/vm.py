"""VM endpoints (reference §3.6-§3.9, §4.2). VM uuids are ZStack's 32-hex-digit uuids."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from kvmagent.contract.base import AgentReply, AgentRequest

Uuid = str
UUID_PATTERN = r"^[0-9a-fA-F]{32}$"
VmStateName = Literal["Running", "Paused", "Stopped", "Crashed", "Unknown"]
BootDev = Literal["hd", "cdrom"]


class TO(BaseModel):
    """A nested transfer object; unknown fields are refused like in requests."""

    model_config = ConfigDict(extra="forbid")


class VolumeTO(TO):
    path: str = Field(min_length=1, pattern=r"^/")
    format: Literal["qcow2", "raw"] = "qcow2"
    uuid: Uuid = Field(min_length=1)
    deviceId: int = Field(0, ge=0, le=24)
    cacheMode: Literal["none", "writethrough", "writeback"] = "none"


class NicTO(TO):
    mac: str = Field(pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
    bridgeName: str = Field(min_length=1, max_length=15)
    deviceId: int = Field(ge=0)
    l3NetworkUuid: Uuid
    ip: str | None = None


class IsoTO(TO):
    path: str = Field(min_length=1, pattern=r"^/")
    imageUuid: Uuid


class VmStateReply(AgentReply):
    uuid: Uuid
    state: VmStateName


class StartVmCmd(AgentRequest):
    """Define and start. Idempotent when the same spec is already running; 409 when another spec is."""

    PATH: ClassVar[str] = "/vm/start"
    Reply: ClassVar[type[AgentReply]] = VmStateReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    internalId: int = Field(ge=0)
    name: str
    cpuNum: int = Field(ge=1, le=256)
    cpuSpeed: int = Field(ge=1, description="MHz")
    memory: int = Field(ge=1 << 20, description="bytes")
    rootVolume: VolumeTO
    dataVolumes: list[VolumeTO] = []
    nics: list[NicTO] = []
    bootDev: list[BootDev] = Field(default=["hd"], min_length=1)
    bootIso: IsoTO | None = None
    firstBootFromCd: bool = Field(False, description="VM created from an ISO: after the first guest "
                                  "reboot the agent restarts it booting from hd")
    consoleMode: Literal["vnc", "spice"] = "vnc"
    consolePassword: str | None = Field(
        None, min_length=8, max_length=8, pattern=r"^[A-Za-z0-9]+$", repr=False,
        description="the console's password (libvirt graphics passwd; VNC reads at most 8 characters); new at "
                    "every start")
    cpuMode: Literal["none", "host-model", "host-passthrough"] = "none"
    platform: Literal["Linux", "Windows", "WindowsVirtio", "Paravirtualization", "Other"] = "Linux"
    hostManagementIp: str
    timeout: float = Field(300, gt=0)
    applianceChannel: bool = Field(False, description="a virtual router: add its virtio-serial control channel "
                                   "(kvmagent.driver.xml.channel); sent only when true, so agents one protocol "
                                   "level behind (which forbid unknown fields) still start ordinary VMs")

    @model_serializer(mode="wrap")
    def _omit_default_channel(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not self.applianceChannel:
            data.pop("applianceChannel", None)
        return data


class StopVmCmd(AgentRequest):
    """Graceful ACPI stop for up to ``timeout`` s, then destroy (at once if ``force``); undefines.
    An absent VM is a success."""

    PATH: ClassVar[str] = "/vm/stop"
    Reply: ClassVar[type[AgentReply]] = VmStateReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    timeout: float = Field(60, ge=0)
    force: bool = False


class RebootVmCmd(AgentRequest):
    PATH: ClassVar[str] = "/vm/reboot"
    Reply: ClassVar[type[AgentReply]] = VmStateReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    bootDev: list[BootDev] = Field(default=["hd"], min_length=1)
    timeout: float = Field(60, ge=0)


class DestroyVmCmd(AgentRequest):
    """Hard power-off and undefine. An absent VM is a success."""

    PATH: ClassVar[str] = "/vm/destroy"
    Reply: ClassVar[type[AgentReply]] = VmStateReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)


class VmStatesReply(AgentReply):
    states: dict[Uuid, VmStateName]


class VmSyncCmd(AgentRequest):
    """Every domain on the host with its state."""

    PATH: ClassVar[str] = "/vm/vmsync"
    Reply: ClassVar[type[AgentReply]] = VmStatesReply


class CheckVmStateCmd(AgentRequest):
    """States of the given VMs; a VM without a domain is ``Stopped``."""

    PATH: ClassVar[str] = "/vm/checkstate"
    Reply: ClassVar[type[AgentReply]] = VmStatesReply
    vmUuids: list[Uuid]


class ConsoleReply(AgentReply):
    protocol: Literal["vnc", "spice"]
    port: int
    hostIp: str
    password: str | None = Field(None, repr=False, description="the console's password, if it has one")


class GetConsoleCmd(AgentRequest):
    """404 ``VM.NOT_FOUND`` when the VM is not running here."""

    PATH: ClassVar[str] = "/vm/console"
    Reply: ClassVar[type[AgentReply]] = ConsoleReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)


class AttachIsoCmd(AgentRequest):
    """Insert the ISO into the running VM's CD-ROM (live and in the definition). Idempotent."""

    PATH: ClassVar[str] = "/vm/iso/attach"
    Reply: ClassVar[type[AgentReply]] = AgentReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    iso: IsoTO


class DetachIsoCmd(AgentRequest):
    """Eject the CD-ROM medium. Idempotent; 409 ``VM.ISO_LOCKED`` if the guest holds it."""

    PATH: ClassVar[str] = "/vm/iso/detach"
    Reply: ClassVar[type[AgentReply]] = AgentReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    isoUuid: Uuid | None = None


class AttachVolumeCmd(AgentRequest):
    """Attach a data volume (live when running, and in the definition). Idempotent."""

    PATH: ClassVar[str] = "/vm/volume/attach"
    Reply: ClassVar[type[AgentReply]] = AgentReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    volume: VolumeTO


class DetachVolumeCmd(AgentRequest):
    """Detach a data volume by its uuid. Idempotent."""

    PATH: ClassVar[str] = "/vm/volume/detach"
    Reply: ClassVar[type[AgentReply]] = AgentReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    volumeUuid: Uuid


class AttachNicCmd(AgentRequest):
    """Hot-plug a NIC into a running VM (and its definition); a stopped VM gets it in its definition.
    Idempotent: a NIC with this MAC already there is a success."""

    PATH: ClassVar[str] = "/vm/nic/attach"
    Reply: ClassVar[type[AgentReply]] = AgentReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    internalId: int = Field(ge=0)
    nic: NicTO


class DetachNicCmd(AgentRequest):
    """Unplug the NIC with this MAC; on a running VM the reply waits until the guest released the device
    (libvirt's device-removed event; 409 ``VM.NIC_DETACH_TIMEOUT`` when it does not within ``timeout``
    seconds, the NIC then still being there). Absent: success."""

    PATH: ClassVar[str] = "/vm/nic/detach"
    Reply: ClassVar[type[AgentReply]] = AgentReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    mac: str = Field(pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")
    timeout: float = Field(default=30.0, gt=0, le=600)
