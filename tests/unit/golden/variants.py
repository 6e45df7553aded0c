"""The VM specs behind the domain-XML golden files (shared by the unit golden test and the contract test
that defines every variant on libvirt's test driver)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kvmagent.driver.spec import DiskSpec, IsoSpec, NicSpec, VmSpec

CONSOLE_DIR = Path("/var/lib/zstack-py/console")

MINIMAL = VmSpec(
    uuid="0123456789abcdef0123456789abcdef", internal_id=42, name="vm-minimal", cpu_num=1, cpu_speed=1000,
    memory_bytes=256 << 20, management_ip="10.0.0.11",
    root_disk=DiskSpec("/zs/local/rootVolumes/acct/root.qcow2", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0))

NIC1 = NicSpec("52:54:00:12:34:56", "br_eth0", 0)
NIC2 = NicSpec("52:54:00:12:34:57", "br_eth1", 1)
DATA1 = DiskSpec("/zs/local/dataVolumes/d1.qcow2", "dddddddddddddddddddddddddddddd01", 1, cache_mode="writeback")
DATA2 = DiskSpec("/zs/local/dataVolumes/d2.qcow2", "dddddddddddddddddddddddddddddd02", 2)
ISO = IsoSpec("/zs/local/imagecache/iso/eeee.iso", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")

#: name → (spec, domain type)
VARIANTS: dict[str, tuple[VmSpec, str]] = {
    "minimal": (MINIMAL, "qemu"),
    "data-disks-iso": (replace(MINIMAL, data_disks=(DATA1, DATA2), iso=ISO), "qemu"),
    "two-nics": (replace(MINIMAL, nics=(NIC1, NIC2)), "qemu"),
    "vnc": (replace(MINIMAL, console_mode="vnc", nics=(NIC1,)), "qemu"),
    "spice": (replace(MINIMAL, console_mode="spice", nics=(NIC1,)), "qemu"),
    "cpu-none-kvm": (replace(MINIMAL, cpu_mode="none"), "kvm"),
    "cpu-host-model": (replace(MINIMAL, cpu_mode="host-model"), "qemu"),
    "cpu-host-passthrough-kvm": (replace(MINIMAL, cpu_mode="host-passthrough"), "kvm"),
    "boot-cdrom-hd": (replace(MINIMAL, boot_devs=("cdrom", "hd"), iso=ISO, first_boot_from_cd=True), "qemu"),
    "windows-non-virtio": (replace(MINIMAL, platform="Windows", nics=(NIC1,), data_disks=(DATA1,), cpu_num=2,
                                   memory_bytes=2 << 30), "qemu"),
}


def console_log(spec: VmSpec) -> Path:
    return CONSOLE_DIR / f"{spec.uuid}.log"
