"""Reads and small rewrites of an existing domain definition (libvirt's own XML, not ours)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from kvmagent.driver.spec import BootDev
from kvmagent.driver.xml.base import to_string
from kvmagent.driver.xml.domain import os_element
from kvmagent.driver.xml.metadata import ZStackMetadata


@dataclass(frozen=True)
class GraphicsInfo:
    protocol: str
    port: int | None
    listen: str | None
    password: str | None = field(default=None, repr=False)


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def metadata(dom: ET.Element) -> ZStackMetadata | None:
    return ZStackMetadata.parse(dom)


def boot_devs(dom: ET.Element) -> list[str]:
    return [b.get("dev", "") for b in dom.findall("os/boot")]


def set_boot(xml: str, devs: Iterable[BootDev], *, clear_first_boot: bool = False) -> str:
    """Replace the ``<os><boot>`` list, keeping the ``<type>`` element libvirt filled in."""
    dom = parse(xml)
    os_el = dom.find("os")
    fresh = os_element(devs)
    if os_el is None:
        dom.append(fresh)
    else:
        for b in os_el.findall("boot"):
            os_el.remove(b)
        for b in fresh.findall("boot"):
            os_el.append(b)
    if clear_first_boot:
        meta = ZStackMetadata.parse(dom)
        old = dom.find("metadata")
        if meta is not None and old is not None:
            dom.remove(old)
            dom.append(replace(meta, first_boot_from_cd=False).element())
    return to_string(dom)


def graphics(dom: ET.Element) -> GraphicsInfo | None:
    """The first VNC or SPICE graphics device; port None until libvirt assigned one."""
    for g in dom.findall("devices/graphics"):
        if g.get("type") in ("vnc", "spice"):
            port = int(g.get("port", "-1"))
            return GraphicsInfo(g.get("type", ""), port if port > 0 else None, g.get("listen"), g.get("passwd"))
    return None


def cdrom_element(dom: ET.Element) -> ET.Element | None:
    return dom.find("devices/disk[@device='cdrom']")


def cdrom_source(dom: ET.Element) -> str | None:
    d = cdrom_element(dom)
    if d is None:
        return None
    src = d.find("source")
    return src.get("file") if src is not None else None


def replace_cdrom(xml: str, cdrom: ET.Element) -> str:
    """The definition with its CD-ROM element replaced (for backends without live device update)."""
    dom = parse(xml)
    devs = dom.find("devices")
    assert devs is not None
    for d in devs.findall("disk[@device='cdrom']"):
        devs.remove(d)
    devs.append(cdrom)
    return to_string(dom)


def disk_element(dom: ET.Element, serial: str) -> ET.Element | None:
    """The disk whose ``<serial>`` is ``serial`` (the volume uuid)."""
    for d in dom.findall("devices/disk[@device='disk']"):
        if (d.findtext("serial") or "") == serial:
            return d
    return None


def uses_virtio_disks(dom: ET.Element) -> bool:
    return any(t.get("bus") == "virtio" for t in dom.findall("devices/disk[@device='disk']/target"))


def disks_without(xml: str, serial: str) -> str:
    dom = parse(xml)
    devs = dom.find("devices")
    assert devs is not None
    for d in devs.findall("disk[@device='disk']"):
        if (d.findtext("serial") or "") == serial:
            devs.remove(d)
    return to_string(dom)


def with_device(xml: str, device: ET.Element) -> str:
    dom = parse(xml)
    devs = dom.find("devices")
    assert devs is not None
    devs.append(device)
    return to_string(dom)


def element_string(e: ET.Element) -> str:
    return to_string(e)


def memory_kib(dom: ET.Element) -> int:
    return int(dom.findtext("memory") or 0)


def interface_element(dom: ET.Element, mac: str) -> ET.Element | None:
    """The ``<interface>`` whose MAC is ``mac`` (case-insensitive)."""
    for i in dom.findall("devices/interface"):
        m = i.find("mac")
        if m is not None and (m.get("address") or "").lower() == mac.lower():
            return i
    return None


def uses_virtio_nics(dom: ET.Element) -> bool:
    """The model new NICs should get: virtio when the domain's NICs (or, without NICs, its disks) are."""
    models = [m.get("type") for m in dom.findall("devices/interface/model")]
    return models[0] == "virtio" if models else uses_virtio_disks(dom)


def interfaces_without(xml: str, mac: str) -> str:
    dom = parse(xml)
    devs = dom.find("devices")
    assert devs is not None
    found = interface_element(dom, mac)
    if found is not None:
        devs.remove(found)
    return to_string(dom)
