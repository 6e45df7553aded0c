"""The device protocol and a tiny element helper shared by the device modules."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Protocol


class Device(Protocol):
    def element(self) -> ET.Element:
        """The device as a libvirt XML element (a fresh element on every call)."""
        ...


def el(tag: str, attrib: dict[str, str] | None = None, text: str | None = None,
       children: list[ET.Element] | tuple[ET.Element, ...] = ()) -> ET.Element:
    """Build an element; ``None`` attribute values are dropped."""
    e = ET.Element(tag, {k: v for k, v in (attrib or {}).items() if v is not None})
    if text is not None:
        e.text = text
    e.extend(children)
    return e


def to_string(e: ET.Element) -> str:
    ET.indent(e, space="  ")
    return ET.tostring(e, encoding="unicode") + "\n"
