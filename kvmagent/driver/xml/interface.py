"""Bridge NICs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmagent.driver.names import nic_device_name
from kvmagent.driver.spec import NicSpec
from kvmagent.driver.xml.base import el


@dataclass(frozen=True)
class BridgeInterface:
    """A NIC plugged into a Linux bridge; the tap name comes from :func:`nic_device_name`."""

    spec: NicSpec
    internal_id: int
    paravirtual: bool

    def element(self) -> ET.Element:
        return el("interface", {"type": "bridge"}, children=[
            el("mac", {"address": self.spec.mac}),
            el("source", {"bridge": self.spec.bridge}),
            el("target", {"dev": nic_device_name(self.internal_id, self.spec.device_id)}),
            el("model", {"type": "virtio" if self.paravirtual else "e1000"}),
        ])
