"""Per-VM console passwords: a new random 8-character password at every start goes into the domain's graphics
``passwd``; it is kept out of reprs (logs) and of the spec fingerprint, read back from the secure XML, and
rejected by the agent contract when malformed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.compute.vmstart import console_password
from kvmagent.contract import vm as vc
from kvmagent.driver.xml.domain import build_domain_xml
from kvmagent.driver.xml.edit import graphics

SPEC_MODULE = Path(__file__).parent / "golden"


def _minimal():  # type: ignore[no-untyped-def]
    import sys

    sys.path.insert(0, str(SPEC_MODULE))
    from variants import MINIMAL

    return MINIMAL


@pytest.mark.parametrize("mode", ["vnc", "spice"])
def test_password_in_graphics_and_read_back(mode: str) -> None:
    spec = replace(_minimal(), console_mode=mode, console_password="Ab3dEf7h")
    xml = build_domain_xml(spec, domain_type="qemu", console_log=Path("/tmp/c.log"))
    g = ET.fromstring(xml).find("devices/graphics")
    assert g is not None and g.get("passwd") == "Ab3dEf7h" and g.get("listen") == "10.0.0.11"
    info = graphics(ET.fromstring(xml))
    assert info is not None and info.password == "Ab3dEf7h"
    assert "Ab3dEf7h" not in repr(spec) and "Ab3dEf7h" not in repr(info)
    # no password given: no passwd attribute (the golden files stay as they are)
    plain = build_domain_xml(replace(spec, console_password=None), domain_type="qemu",
                             console_log=Path("/tmp/c.log"))
    assert "passwd" not in plain


def test_fingerprint_ignores_the_password() -> None:
    spec = _minimal()
    assert replace(spec, console_password="Ab3dEf7h").fingerprint() == \
        replace(spec, console_password="Zz9yXx8w").fingerprint() == spec.fingerprint()


def test_new_password_each_start() -> None:
    pws = {console_password() for _ in range(50)}
    assert len(pws) == 50
    assert all(len(p) == 8 and p.isalnum() and p.isascii() for p in pws)


def test_contract_checks_the_password() -> None:
    base = {"uuid": "a" * 32, "internalId": 1, "name": "v", "cpuNum": 1, "cpuSpeed": 1000, "memory": 1 << 30,
            "rootVolume": {"path": "/r.qcow2", "format": "qcow2", "uuid": "b" * 32, "deviceId": 0},
            "hostManagementIp": "10.0.0.1"}
    cmd = vc.StartVmCmd.model_validate({**base, "consolePassword": "Ab3dEf7h"})
    assert cmd.consolePassword == "Ab3dEf7h" and "Ab3dEf7h" not in repr(cmd)
    for bad in ("short", "toolong123", "bad pass", "ab;d\"f'h"):
        with pytest.raises(ValidationError) as e:
            vc.StartVmCmd.model_validate({**base, "consolePassword": bad})
        assert "consolePassword" in str(e.value)
