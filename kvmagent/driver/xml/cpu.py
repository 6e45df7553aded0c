"""The ``<cpu>`` element for ZStack's cpuMode (reference §3.8)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmagent.driver.errors import InvalidSpec
from kvmagent.driver.spec import CpuMode
from kvmagent.driver.xml.base import el


@dataclass(frozen=True)
class Cpu:
    """``none``: no element; ``host-model``/``host-passthrough``: ``<cpu mode=...>`` with a fallback model."""

    mode: CpuMode

    def check(self, domain_type: str) -> None:
        """Refuse combinations the host cannot run, before anything is defined."""
        if self.mode == "host-passthrough" and domain_type != "kvm":
            raise InvalidSpec("cpuMode", self.mode,
                              f"host-passthrough needs KVM; this host runs TCG (domain type {domain_type})")

    def element(self) -> ET.Element | None:
        if self.mode == "none":
            return None
        return el("cpu", {"mode": self.mode}, children=[el("model", {"fallback": "allow"})])
