"""The whole ``<domain>``: fixed skeleton (ZStack 1.0's ``Vm.from_StartVmCmd``) plus one object per device."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

from kvmagent.driver.errors import InvalidSpec
from kvmagent.driver.spec import BootDev, VmSpec
from kvmagent.driver.xml.base import Device, el, to_string
from kvmagent.driver.xml.channel import RouterChannel, channel_socket
from kvmagent.driver.xml.cpu import Cpu
from kvmagent.driver.xml.disk import Cdrom, Disk
from kvmagent.driver.xml.graphics import Graphics
from kvmagent.driver.xml.interface import BridgeInterface
from kvmagent.driver.xml.metadata import ZStackMetadata
from kvmagent.driver.xml.serial import SerialConsole

#: TCG translation-block cache: QEMU's default is 1 GiB of RSS-to-be; 32 MiB is enough (testbed.md).
TCG_TB_CACHE_MIB = 32


def dashed_uuid(vm_uuid: str) -> str:
    """ZStack uuids are 32 hex digits; libvirt wants the dashed form."""
    try:
        return str(uuidlib.UUID(hex=vm_uuid))
    except ValueError as e:
        raise InvalidSpec("uuid", vm_uuid, "must be 32 hexadecimal digits") from e


def os_element(boot_devs: Iterable[BootDev]) -> ET.Element:
    boots = [el("boot", {"dev": dev}) for dev in boot_devs]
    return el("os", children=[el("type", {"arch": "x86_64", "machine": "pc"}, text="hvm"), *boots])


def _features(domain_type: str) -> ET.Element:
    feats = [el("acpi"), el("apic"), el("pae")]
    if domain_type == "qemu":
        feats.append(el("tcg", children=[el("tb-cache", {"unit": "MiB"}, text=str(TCG_TB_CACHE_MIB))]))
    return el("features", children=feats)


def devices(spec: VmSpec, console_log: Path) -> list[Device]:
    """The device objects of a spec, in the order they appear in the XML."""
    pv = spec.paravirtual
    devs: list[Device] = [Disk(spec.root_disk, pv)]
    devs += [Disk(d, pv) for d in sorted(spec.data_disks, key=lambda d: d.device_id)]
    devs.append(Cdrom(spec.iso.path if spec.iso else None))
    devs += [BridgeInterface(n, spec.internal_id, pv) for n in sorted(spec.nics, key=lambda n: n.device_id)]
    devs.append(Graphics(spec.console_mode, spec.management_ip, spec.console_password))
    devs.append(SerialConsole(str(console_log)))
    if spec.appliance_channel:  # console_log is <state_dir>/console/<uuid>.log
        devs.append(RouterChannel(str(channel_socket(console_log.parent.parent, spec.uuid))))
    return devs


def _check(spec: VmSpec, domain_type: str) -> None:
    if spec.cpu_num < 1:
        raise InvalidSpec("cpuNum", spec.cpu_num, "must be at least 1")
    if spec.memory_bytes < 1 << 20:
        raise InvalidSpec("memory", spec.memory_bytes, "must be at least 1 MiB (in bytes)")
    if not spec.boot_devs:
        raise InvalidSpec("bootDev", list(spec.boot_devs), "needs at least one boot device")
    if domain_type not in ("kvm", "qemu"):
        raise InvalidSpec("domainType", domain_type, "must be kvm or qemu")
    ids = [spec.root_disk.device_id] + [d.device_id for d in spec.data_disks]
    if len(set(ids)) != len(ids):
        raise InvalidSpec("dataVolumes", ids, "disk deviceIds must be unique (root is usually 0)")
    Cpu(spec.cpu_mode).check(domain_type)


def build_domain_xml(spec: VmSpec, *, domain_type: str, console_log: Path) -> str:
    """Domain XML for ``spec``. Raises :class:`InvalidSpec` (nothing defined yet) for impossible specs,
    e.g. host-passthrough on a TCG host."""
    _check(spec, domain_type)
    kib = spec.memory_bytes // 1024
    meta = ZStackMetadata(spec.uuid, spec.internal_id, spec.management_ip, spec.fingerprint(),
                          spec.first_boot_from_cd)
    cpu = Cpu(spec.cpu_mode).element()
    console = SerialConsole(str(console_log))
    dom = el("domain", {"type": domain_type}, children=[
        el("name", text=spec.uuid),
        el("uuid", text=dashed_uuid(spec.uuid)),
        el("description", text=spec.name),
        meta.element(),
        el("memory", {"unit": "KiB"}, text=str(kib)),
        el("currentMemory", {"unit": "KiB"}, text=str(kib)),
        el("vcpu", {"placement": "static"}, text=str(spec.cpu_num)),
        el("cputune", children=[el("shares", text=str(max(2, spec.cpu_speed * spec.cpu_num)))]),
        os_element(spec.boot_devs),
        _features(domain_type),
        *([cpu] if cpu is not None else []),
        el("clock", {"offset": "utc"}),
        el("on_poweroff", text="destroy"),
        el("on_reboot", text="restart"),
        el("on_crash", text="restart"),
        el("devices", children=[
            *(d.element() for d in devices(spec, console_log)),
            console.console_element(),
            el("input", {"type": "tablet", "bus": "usb"}),
            el("memballoon", {"model": "virtio"}, children=[el("stats", {"period": "10"})]),
        ]),
    ])
    return to_string(dom)
