"""ZStack's block inside ``<metadata>``: what the agent must know about a domain after a restart."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from kvmagent.driver.xml.base import el

NS = "http://zstack.org/zstack-py/vm/1"
ET.register_namespace("zs", NS)


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


@dataclass(frozen=True)
class ZStackMetadata:
    vm_uuid: str
    internal_id: int
    management_ip: str
    fingerprint: str = ""
    first_boot_from_cd: bool = False

    def element(self) -> ET.Element:
        return el("metadata", children=[el(_q("zstack"), children=[
            el(_q("vmUuid"), text=self.vm_uuid),
            el(_q("internalId"), text=str(self.internal_id)),
            el(_q("hostManagementIp"), text=self.management_ip),
            el(_q("specFingerprint"), text=self.fingerprint),
            el(_q("firstBootFromCd"), text="true" if self.first_boot_from_cd else "false"),
        ])])

    @classmethod
    def parse(cls, domain: ET.Element) -> ZStackMetadata | None:
        """Read the block back from a domain element; None when the domain is not ours."""
        block = domain.find(f"metadata/{_q('zstack')}")
        if block is None:
            return None

        def text(tag: str) -> str:
            node = block.find(_q(tag))
            return (node.text or "") if node is not None else ""

        return cls(vm_uuid=text("vmUuid"), internal_id=int(text("internalId") or 0),
                   management_ip=text("hostManagementIp"), fingerprint=text("specFingerprint"),
                   first_boot_from_cd=text("firstBootFromCd") == "true")
