"""VNC or SPICE graphics on the host's management IP (never 0.0.0.0), port chosen by libvirt, with a password
when the controller gives one (libvirt ``passwd``; not shown in the domain XML without VIR_DOMAIN_XML_SECURE)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from kvmagent.driver.spec import ConsoleMode
from kvmagent.driver.xml.base import el


@dataclass(frozen=True)
class Graphics:
    protocol: ConsoleMode
    listen_ip: str
    password: str | None = field(default=None, repr=False)

    def element(self) -> ET.Element:
        attrs = {"type": self.protocol, "autoport": "yes", "listen": self.listen_ip}
        if self.password:
            attrs["passwd"] = self.password
        return el("graphics", attrs,
                  children=[el("listen", {"type": "address", "address": self.listen_ip})])
