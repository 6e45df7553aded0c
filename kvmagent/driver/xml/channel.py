"""The virtual router's control channel: a virtio-serial port whose host side is a unix socket QEMU binds
(``<state_dir>/vrouter/<vmUuid>.sock``); the router agent serves HTTP on the guest side (vrouter.agent)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from kvmagent.driver.xml.base import el
from vrouter.contract import CHANNEL_NAME


def channel_socket(state_dir: Path, vm_uuid: str) -> Path:
    return state_dir / "vrouter" / f"{vm_uuid}.sock"


@dataclass(frozen=True)
class RouterChannel:
    socket_path: str

    def element(self) -> ET.Element:
        return el("channel", {"type": "unix"}, children=[
            el("source", {"mode": "bind", "path": self.socket_path}),
            el("target", {"type": "virtio", "name": CHANNEL_NAME}),
        ])
