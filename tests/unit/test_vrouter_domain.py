"""The router's control channel in the domain XML, and the start command staying compatible with agents one
protocol level behind (the new field is only sent for routers)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from golden.variants import MINIMAL, console_log

from kvmagent.contract.vm import StartVmCmd, VolumeTO
from kvmagent.driver.xml import build_domain_xml
from vrouter import CHANNEL_NAME


def test_a_router_gets_its_channel_and_other_vms_do_not() -> None:
    router = replace(MINIMAL, appliance_channel=True)
    dom = ET.fromstring(build_domain_xml(router, domain_type="qemu", console_log=console_log(router)))
    [chan] = dom.findall("devices/channel")
    assert chan.get("type") == "unix" and chan.find("target").get("name") == CHANNEL_NAME  # type: ignore[union-attr]
    src = chan.find("source")
    assert src is not None and src.get("mode") == "bind"
    assert src.get("path") == str(console_log(router).parent.parent / "vrouter" / f"{router.uuid}.sock")
    plain = ET.fromstring(build_domain_xml(MINIMAL, domain_type="qemu", console_log=console_log(MINIMAL)))
    assert plain.findall("devices/channel") == []
    assert router.fingerprint() != MINIMAL.fingerprint()


def test_start_command_sends_the_channel_flag_only_for_routers() -> None:
    cmd = StartVmCmd(uuid="a" * 32, internalId=1, name="x", cpuNum=1, cpuSpeed=1, memory=1 << 20,
                     rootVolume=VolumeTO(path="/x", uuid="b" * 32, deviceId=0), hostManagementIp="10.0.0.1")
    assert "applianceChannel" not in cmd.model_dump(mode="json")
    wire = cmd.model_copy(update={"applianceChannel": True}).model_dump(mode="json")
    assert wire["applianceChannel"] is True and StartVmCmd.model_validate(wire).applianceChannel
