"""Golden-file tests of the domain XML (virt-manager's ``*-out.xml`` lesson).

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_domain_xml.py`` and
review the diff. tests/contract/test_domain_xml_define.py defines every variant on libvirt's test driver.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from golden.variants import MINIMAL, VARIANTS, console_log

from kvmagent.driver.errors import InvalidSpec
from kvmagent.driver.names import nic_device_name
from kvmagent.driver.xml import build_domain_xml
from kvmagent.driver.xml.edit import boot_devs, metadata, parse, set_boot

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_golden(name: str) -> None:
    spec, dtype = VARIANTS[name]
    xml = build_domain_xml(spec, domain_type=dtype, console_log=console_log(spec))
    path = GOLDEN / f"{name}.xml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(xml)
    assert xml == path.read_text(), f"domain XML of variant {name} differs from {path}"


def test_host_passthrough_on_tcg_fails_before_defining() -> None:
    spec = replace(MINIMAL, cpu_mode="host-passthrough")
    with pytest.raises(InvalidSpec) as e:
        build_domain_xml(spec, domain_type="qemu", console_log=console_log(spec))
    assert "host-passthrough needs KVM; this host runs TCG" in e.value.message
    assert e.value.status == 400 and e.value.details == {"field": "cpuMode", "value": "host-passthrough"}


def test_tcg_gets_tb_cache_and_kvm_does_not() -> None:
    tcg = ET.fromstring(build_domain_xml(MINIMAL, domain_type="qemu", console_log=console_log(MINIMAL)))
    kvm = ET.fromstring(build_domain_xml(MINIMAL, domain_type="kvm", console_log=console_log(MINIMAL)))
    assert tcg.findtext("features/tcg/tb-cache") == "32"
    assert kvm.find("features/tcg") is None and kvm.get("type") == "kvm"


@pytest.mark.parametrize("field,value,wire", [("uuid", "not-a-uuid", "uuid"), ("cpu_num", 0, "cpuNum"),
                                              ("boot_devs", (), "bootDev")])
def test_bad_specs_name_the_field(field: str, value: object, wire: str) -> None:
    spec = replace(MINIMAL, **{field: value})
    with pytest.raises(InvalidSpec) as e:
        build_domain_xml(spec, domain_type="qemu", console_log=console_log(spec))
    assert e.value.details is not None and e.value.details["field"] == wire
    assert e.value.message.startswith(f"{wire}=")


def test_duplicate_disk_device_ids_are_refused() -> None:
    spec = replace(MINIMAL, data_disks=(replace(MINIMAL.root_disk, volume_uuid="b" * 32),))
    with pytest.raises(InvalidSpec, match="deviceIds must be unique"):
        build_domain_xml(spec, domain_type="qemu", console_log=console_log(spec))


def test_nic_names_come_from_one_function() -> None:
    assert nic_device_name(42, 1) == "vnic42.1"
    with pytest.raises(ValueError, match="longer than 15"):
        nic_device_name(10**9, 10)


def test_set_boot_rewrites_boot_order_and_clears_first_boot_flag() -> None:
    spec, dtype = VARIANTS["boot-cdrom-hd"]
    xml = build_domain_xml(spec, domain_type=dtype, console_log=console_log(spec))
    meta = metadata(parse(xml))
    assert meta is not None and meta.first_boot_from_cd and meta.fingerprint == spec.fingerprint()
    new = parse(set_boot(xml, ["hd", "cdrom"], clear_first_boot=True))
    assert boot_devs(new) == ["hd", "cdrom"]
    new_meta = metadata(new)
    assert new_meta is not None and not new_meta.first_boot_from_cd and new_meta.internal_id == 42
