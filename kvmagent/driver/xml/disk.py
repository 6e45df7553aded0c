"""File-backed disks and the always-present CD-ROM."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmagent.driver.names import CDROM_TARGET, disk_target
from kvmagent.driver.spec import DiskSpec
from kvmagent.driver.xml.base import el


@dataclass(frozen=True)
class Disk:
    """A qcow2 (or raw) file disk; the volume uuid is the disk serial, so the guest can find it."""

    spec: DiskSpec
    paravirtual: bool

    def element(self) -> ET.Element:
        dev, bus = disk_target(self.spec.device_id, self.paravirtual)
        return el("disk", {"type": "file", "device": "disk"}, children=[
            el("driver", {"name": "qemu", "type": self.spec.format, "cache": self.spec.cache_mode}),
            el("source", {"file": self.spec.path}),
            el("target", {"dev": dev, "bus": bus}),
            el("serial", text=self.spec.volume_uuid),
        ])


@dataclass(frozen=True)
class Cdrom:
    """The CD-ROM drive on ``hdc``/ide, read-only; empty when ``iso_path`` is None."""

    iso_path: str | None = None

    def element(self) -> ET.Element:
        dev, bus = CDROM_TARGET
        children = [el("driver", {"name": "qemu", "type": "raw"})]
        if self.iso_path:
            children.append(el("source", {"file": self.iso_path}))
        children.append(el("target", {"dev": dev, "bus": bus}))
        children.append(el("readonly"))
        return el("disk", {"type": "file", "device": "cdrom"}, children=children)
