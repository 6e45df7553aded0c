"""What the driver needs to know to run a VM: plain frozen dataclasses, independent of the wire contract.

The agent's handlers translate the contract's ``StartVmCmd`` into a :class:`VmSpec`; the XML builder
(``kvmagent.driver.xml``) turns a spec into domain XML. Nothing here talks to libvirt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

BootDev = Literal["hd", "cdrom"]
ConsoleMode = Literal["vnc", "spice"]
CpuMode = Literal["none", "host-model", "host-passthrough"]
Platform = Literal["Linux", "Windows", "WindowsVirtio", "Paravirtualization", "Other"]
CacheMode = Literal["none", "writethrough", "writeback"]

#: Platforms whose guests have virtio drivers (ZStack 1.0: Linux, WindowsVirtio, Paravirtualization).
PARAVIRTUAL_PLATFORMS = frozenset({"Linux", "WindowsVirtio", "Paravirtualization"})


@dataclass(frozen=True)
class DiskSpec:
    """A file-backed disk. ``device_id`` picks the target letter (0 = root)."""

    path: str
    volume_uuid: str
    device_id: int
    format: str = "qcow2"
    cache_mode: CacheMode = "none"


@dataclass(frozen=True)
class NicSpec:
    mac: str
    bridge: str
    device_id: int


@dataclass(frozen=True)
class IsoSpec:
    path: str
    image_uuid: str


@dataclass(frozen=True)
class VmSpec:
    """Everything that goes into a domain definition.

    ``first_boot_from_cd`` marks a VM created from an ISO: when the guest reboots for the first time the
    agent restarts it booting from ``hd`` (reference §3.6).
    """

    uuid: str
    internal_id: int
    name: str
    cpu_num: int
    cpu_speed: int
    memory_bytes: int
    root_disk: DiskSpec
    management_ip: str
    data_disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    boot_devs: tuple[BootDev, ...] = ("hd",)
    iso: IsoSpec | None = None
    console_mode: ConsoleMode = "vnc"
    console_password: str | None = field(default=None, repr=False)
    cpu_mode: CpuMode = "none"
    platform: Platform = "Linux"
    first_boot_from_cd: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    appliance_channel: bool = False

    @property
    def paravirtual(self) -> bool:
        return self.platform in PARAVIRTUAL_PLATFORMS

    def fingerprint(self) -> str:
        """A stable hash of the spec; stored in the domain metadata to tell "same VM config" on retries. The
        console password is left out: it changes at every start and is not part of the VM's configuration."""
        fields = asdict(self)
        fields.pop("console_password", None)
        if not fields.get("appliance_channel"):  # absent before routers existed: keep older fingerprints
            fields.pop("appliance_channel", None)
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:32]
