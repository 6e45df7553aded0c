"""The seed's section 13 (upgrade an L3 from VirtualRouter DHCP/DNS to the flat provider), verbatim through
zstack-cli against a real controller process, with real uuids.

The controller runs as ``python -m controller.server`` on a free loopback port with a private database;
the CLI runs in-process (``controller.cli.main.main``) with ``ZSTACK_URL`` and ``ZSTACK_CLI_HOME`` set.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main as cli_main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def controller_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    d = tmp_path_factory.mktemp("controller")
    port = _free_port()
    cfg = d / "controller.json"
    cfg.write_text(json.dumps({"listen_host": "127.0.0.1", "port": port, "db_path": str(d / "c.db"),
                               "log_dir": str(d / "log")}))
    proc = subprocess.Popen([sys.executable, "-m", "controller.server", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(d / "stderr", "wb"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"controller did not start: {(d / 'stderr').read_text()}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def cli(controller_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.setenv("ZSTACK_URL", controller_url)
    monkeypatch.setenv("ZSTACK_CLI_HOME", str(tmp_path / "cli"))

    def run(line: str, *, expect: int = 0) -> dict[str, Any]:
        rc = cli_main([line])
        out, err = capsys.readouterr()
        assert rc == expect, f"{line!r} exited {rc}: {err}"
        return json.loads(out) if out.strip() else {"stderr": err}

    run("LogInByAccount accountName=admin password=password")
    return run


def _uuid(reply: dict[str, Any]) -> str:
    return str(reply["inventory"]["uuid"])


def test_seed_section_13_verbatim(cli: Any) -> None:
    # Set-up as in the seed's starting point: an L3 whose DHCP and DNS come from the VirtualRouter provider.
    zone = _uuid(cli("CreateZone name=zone1"))
    l2 = _uuid(cli(f"CreateL2NoVlanNetwork name=l2 zoneUuid={zone} physicalInterface=eth0"))
    l3 = _uuid(cli(f"CreateL3Network name=l3-etpz l2NetworkUuid={l2}"))
    cli(f"AddIpRange l3NetworkUuid={l3} name=ipr-dk7p startIp=192.168.201.180 endIp=192.168.201.199 "
        "netmask=255.255.252.0 gateway=192.168.200.1")
    cli(f"AddDnsToL3Network l3NetworkUuid={l3} dns=8.8.8.8")
    vr = cli("QueryNetworkServiceProvider type=VirtualRouter")["inventories"][0]["uuid"]
    cli(f"AttachNetworkServiceToL3Network l3NetworkUuid={l3} networkServices=\"{{'{vr}':['DHCP','DNS']}}\"")

    # 1. Obtain the UUID of the virtual router provider
    refs = cli(f"QueryNetworkServiceL3NetworkRef l3NetworkUuid={l3}")
    assert refs["success"] is True
    assert sorted((r["networkServiceType"], r["networkServiceProviderUuid"], r["l3NetworkUuid"])
                  for r in refs["inventories"]) == [("DHCP", vr, l3), ("DNS", vr, l3)]
    assert set(refs["inventories"][0]) == {"l3NetworkUuid", "networkServiceProviderUuid", "networkServiceType"}

    # 2. Detach the virtual router provider from the L3 network
    inv = cli(f"DetachNetworkServiceFromL3Network l3NetworkUuid={l3} "
              f"networkServices='{{\"{vr}\":[\"DHCP\",\"DNS\"]}}'")["inventory"]
    assert inv["networkServices"] == [] and inv["dns"] == ["8.8.8.8"] and inv["uuid"] == l3
    assert inv["l2NetworkUuid"] == l2 and inv["zoneUuid"] == zone and inv["type"] == "L3BasicNetwork"
    assert inv["state"] == "Enabled" and inv["system"] is False
    rng = inv["ipRanges"][0]
    assert (rng["startIp"], rng["endIp"], rng["gateway"], rng["netmask"], rng["name"]) == (
        "192.168.201.180", "192.168.201.199", "192.168.200.1", "255.255.252.0", "ipr-dk7p")

    # 3. Get the flat network provider UUID
    flat = cli("QueryNetworkServiceProvider type=Flat")["inventories"][0]
    assert flat["name"] == "Flat Network Service Provider" and flat["type"] == "Flat"
    assert flat["description"] == "Flat Network Service Provider"
    assert sorted(flat["networkServiceTypes"]) == ["DHCP", "Userdata"]

    # 4. Get L2 UUID for the L3 network (the seed's trailing comma and space included)
    got = cli(f"QueryL3Network fields=l2NetworkUuid, uuid={l3}")
    assert got == {"inventories": [{"l2NetworkUuid": l2}], "success": True}

    # 5. Attach the flat network provider to the L2 network
    prov = cli(f"AttachNetworkServiceProviderToL2Network l2NetworkUuid={l2} "
               f"networkServiceProviderUuid={flat['uuid']}")["inventory"]
    assert l2 in prov["attachedL2NetworkUuids"] and prov["uuid"] == flat["uuid"]

    # 6. Attach the flat network provider to the L3 network
    inv = cli(f"AttachNetworkServiceToL3Network l3NetworkUuid={l3} "
              f"networkServices='{{\"{flat['uuid']}\":[\"DHCP\",\"Userdata\"]}}'")["inventory"]
    assert sorted((s["networkServiceType"], s["networkServiceProviderUuid"]) for s in inv["networkServices"]) == [
        ("DHCP", flat["uuid"]), ("Userdata", flat["uuid"])]

    # 7. There is no virtual router VM to delete yet: the query answers an empty list.
    assert cli("QueryVirtualRouterVm") == {"inventories": [], "success": True}


def test_cli_errors_are_clear_messages(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = cli("CreateZone", expect=1)
    assert "SYS.1007" in out["stderr"] and "name" in out["stderr"] and "Traceback" not in out["stderr"]
    out = cli(f"AttachNetworkServiceToL3Network l3NetworkUuid={'0' * 32} networkServices='{{}}'", expect=1)
    assert "Traceback" not in out["stderr"]


def test_cli_reports_a_controller_that_is_not_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ZSTACK_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("ZSTACK_CLI_HOME", str(tmp_path))
    assert cli_main(["QueryZone"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the ZStack-Py controller" in err and "zstack-ctl start" in err


def test_cli_output_is_sorted_four_space_json(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["QueryZone limit=1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('{\n    "inventories": [') and out.rstrip().endswith('"success": true\n}')
