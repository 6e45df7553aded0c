"""Every golden-file variant of the domain XML is accepted by libvirt (defined on the test driver)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from kvmagent.driver.eventloop import bind_event_loop
from kvmagent.driver.host import Host
from kvmagent.driver.testnode import write_node_xml
from kvmagent.driver.xml import build_domain_xml
from kvmagent.driver.xml.edit import metadata, parse

_spec = importlib.util.spec_from_file_location(
    "golden_variants", Path(__file__).resolve().parent.parent / "unit" / "golden" / "variants.py")
assert _spec is not None and _spec.loader is not None
variants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(variants)


@pytest.mark.parametrize("name", sorted(variants.VARIANTS))
async def test_variant_defines_on_libvirt(name: str, tmp_path: Path) -> None:
    spec, dtype = variants.VARIANTS[name]
    xml = build_domain_xml(spec, domain_type=dtype, console_log=variants.console_log(spec))
    bind_event_loop()
    host = Host(write_node_xml(tmp_path / "node.xml"))
    await host.connect()
    try:
        guest = await host.define(xml)
        back = parse(await guest.xml(inactive=True))
        assert back.findtext("name") == spec.uuid and back.get("type") == dtype
        meta = metadata(back)
        assert meta is not None and meta.internal_id == spec.internal_id
        assert len(back.findall("devices/disk")) == 2 + len(spec.data_disks)
        assert len(back.findall("devices/interface")) == len(spec.nics)
    finally:
        await host.disconnect()
