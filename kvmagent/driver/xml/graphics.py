"""VNC or SPICE graphics on the host's management IP (never 0.0.0.0), port chosen by libvirt."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmagent.driver.spec import ConsoleMode
from kvmagent.driver.xml.base import el


@dataclass(frozen=True)
class Graphics:
    protocol: ConsoleMode
    listen_ip: str

    def element(self) -> ET.Element:
        return el("graphics", {"type": self.protocol, "autoport": "yes", "listen": self.listen_ip},
                  children=[el("listen", {"type": "address", "address": self.listen_ip})])
