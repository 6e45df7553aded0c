"""ISO attach/detach and boot order against real in-process agents (libvirt test driver, real StorageService):
the tag, the CD-ROM in the domain, 1.0's rules and errors, and a VM created from an ISO booting from it first."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from test_controller_compute import CTX, Env, _agent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "functional"))
from tinyguest import build_image


async def _iso(env: Env) -> dict[str, Any]:
    iso = build_image() / "tiny.iso"
    return await env.inv("AddImage", name="tiny-iso", url=f"file://{iso}", format="iso", mediaType="ISO")


async def _domain_xml(env: Env, vm: dict[str, Any]) -> str:
    driver = _agent(env, vm["hostUuid"]).app[CTX].driver
    guest = await driver.host.lookup(vm["uuid"])
    assert guest is not None
    return str(await guest.xml(inactive=True))


async def test_attach_detach_iso_and_boot_order(env: Env) -> None:
    iso = await _iso(env)
    status, body = await env.create_vm("vm")
    vm = body["inventory"]
    assert (await env.call("GetVmBootOrder", uuid=vm["uuid"]))["order"] == ["HardDisk"]
    # running VM: live insert into the CD-ROM, kept as the iso:: tag; boot order unchanged
    await env.call("AttachIsoToVmInstance", vmInstanceUuid=vm["uuid"], isoUuid=iso["uuid"])
    assert iso["uuid"] in await _domain_xml(env, vm)
    assert (await env.call("GetVmBootOrder", uuid=vm["uuid"]))["order"] == ["HardDisk"]
    other = await env.inv("AddImage", name="iso2", url=f"file://{build_image() / 'tiny.iso'}", format="iso",
                          mediaType="ISO")
    status, body = await env.raw("AttachIsoToVmInstance", vmInstanceUuid=vm["uuid"], isoUuid=other["uuid"])
    assert status == 409 and "already has an ISO" in body["error"]["details"]
    status, body = await env.raw("AttachIsoToVmInstance", vmInstanceUuid=vm["uuid"], isoUuid=env.ids["image"])
    assert status == 400 and "not an ISO" in body["error"]["details"]
    # stopped VM: the ISO stays (tag) and is in the definition at the next start
    await env.call("StopVmInstance", uuid=vm["uuid"])
    await env.call("SetVmBootOrder", uuid=vm["uuid"], bootOrder=["CdRom", "HardDisk"])
    assert (await env.call("GetVmBootOrder", uuid=vm["uuid"]))["order"] == ["CdRom", "HardDisk"]
    started = await env.inv("StartVmInstance", uuid=vm["uuid"])
    xml = await _domain_xml(env, started)
    assert iso["uuid"] in xml and xml.index("boot dev='cdrom'") < xml.index("boot dev='hd'")
    await env.call("DetachIsoFromVmInstance", vmInstanceUuid=vm["uuid"])
    assert iso["uuid"] not in await _domain_xml(env, started)
    tags = await env.core.db.fetchall("SELECT tag FROM SystemTag WHERE resourceUuid=?", (vm["uuid"],))
    assert not any(t["tag"].startswith("iso::") for t in tags)
    status, body = await env.raw("SetVmBootOrder", uuid=vm["uuid"], bootOrder=["Floppy"])
    assert status == 400 and "bootOrder" in body["error"]["details"] and "Floppy" in body["error"]["details"]
    await env.call("SetVmBootOrder", uuid=vm["uuid"])  # null resets
    assert (await env.call("GetVmBootOrder", uuid=vm["uuid"]))["order"] == ["HardDisk"]


async def test_vm_from_iso_boots_from_the_cdrom_first(env: Env) -> None:
    iso = await _iso(env)
    status, body = await env.raw("CreateVmInstance", name="inst", instanceOfferingUuid=env.ids["offering"],
                                 imageUuid=iso["uuid"], l3NetworkUuids=[env.ids["l3"]])
    assert status == 400 and "rootDiskOfferingUuid" in body["error"]["details"]
    disk = await env.inv("CreateDiskOffering", name="d", diskSize=1 << 30)
    vm = (await env.call("CreateVmInstance", name="inst", instanceOfferingUuid=env.ids["offering"],
                         imageUuid=iso["uuid"], l3NetworkUuids=[env.ids["l3"]],
                         rootDiskOfferingUuid=disk["uuid"]))["inventory"]
    root = next(v for v in vm["allVolumes"] if v["type"] == "Root")
    assert root["size"] == 1 << 30 and root["status"] == "Ready"
    xml = await _domain_xml(env, vm)
    assert xml.index("boot dev='cdrom'") < xml.index("boot dev='hd'") and iso["uuid"] in xml
    assert (await env.call("GetVmBootOrder", uuid=vm["uuid"]))["order"] == ["HardDisk"]
