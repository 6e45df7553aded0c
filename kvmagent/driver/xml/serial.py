"""The serial console: a pty (for ``virsh console``) whose output is also appended to a log file.

The e2e tier reads the guest console from ``<state_dir>/console/<vmUuid>.log``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmagent.driver.xml.base import el


@dataclass(frozen=True)
class SerialConsole:
    log_path: str

    def element(self) -> ET.Element:
        return el("serial", {"type": "pty"}, children=[
            el("log", {"file": self.log_path, "append": "on"}),
            el("target", {"port": "0"}),
        ])

    def console_element(self) -> ET.Element:
        return el("console", {"type": "pty"}, children=[el("target", {"type": "serial", "port": "0"})])
