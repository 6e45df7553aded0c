"""Issue 6's VM features end to end on the testbed, on tiny guests driven through the controller's API.

* A VM created from ``tiny.iso`` with a root disk offering boots from its CD-ROM; the "installation" writes the
  tiny disk image onto its empty ``/dev/vda`` over SSH; the guest's own ``reboot`` then lands on its disk (the
  agent's CD-then-disk switch), and ``SetVmBootOrder`` + ``RebootVmInstance`` choose the device of the next boot.
* Live ``AttachIsoToVmInstance`` / ``DetachIsoFromVmInstance``: the guest reads (or no longer reads) ``/dev/sr0``.
* ``GetVmConsoleAddress`` for vnc and spice: the returned host:port speaks RFB or the SPICE link protocol.
* ``vm.cpuMode``: host-model shows in the running domain; host-passthrough is refused under TCG, VM stays Stopped.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lab import PS_URL, Testbed, TinyImage
from test_flatnet import Flat, flat_lab

MiB = 1 << 20


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(testbed: Testbed, tiny: TinyImage, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Flat]:
    """An in-process controller with both testbed hosts and flat DHCP + user data on the L3 (for SSH keys), for
    the module (each test destroys its VMs and restores the global configs it changes)."""
    async with flat_lab("vmfeatures", testbed, tiny, tmp_path_factory.mktemp("vmfeatures"), services=True,
                        paths=(PS_URL, "/var/lib/zstack-py/console"), log_tail=25) as lab:
        yield lab


async def _create(lab: Flat, name: str, image: str, **extra: Any) -> dict[str, Any]:
    c = lab.ctl
    return await c.inv("CreateVmInstance", name=name, instanceOfferingUuid=c.ids["offering"], imageUuid=image,
                       l3NetworkUuids=[c.ids["l3"]], systemTags=[f"sshkey::{lab.pub}"], **extra)


async def _next_boot(lab: Flat, vm: dict[str, Any], after: int) -> tuple[str, int]:
    """The device of the first ``tiny: booted from`` line past console offset ``after``; and its end offset."""
    m = await lab.wait_console(vm, r"tiny: booted from (disk|cdrom)", after=after, timeout=90)
    return m.group(1), m.end()


async def _lease(lab: Flat, vm: dict[str, Any], after: int) -> None:
    await lab.wait_console(vm, rf"tiny: LEASE eth0 {re.escape(vm['vmNics'][0]['ip'])}/", after=after, timeout=90)


async def _install_disk(lab: Flat, vm: dict[str, Any], tiny: TinyImage, tmp_path: Path) -> None:
    """The "installer": the raw tiny disk image, piped over SSH onto the guest's empty root disk."""
    raw = tmp_path / "tiny.raw"
    await asyncio.to_thread(subprocess.run, ["qemu-img", "convert", "-O", "raw", str(tiny.qcow2), str(raw)],
                            check=True)
    (st,) = await lab.status(vm["hostUuid"])
    ssh = (f"ssh -i {lab.key} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
           f"-o LogLevel=ERROR root@{vm['vmNics'][0]['ip']}")
    h = lab.hosts[vm["hostUuid"]]
    cp = await asyncio.to_thread(h.run, "sh", "-c", f"ip netns exec {st.namespace} {ssh} "
                                 f"'dd of=/dev/vda bs=1M && sync && echo written' < {raw}", check=False, timeout=120)
    assert cp.returncode == 0 and "written" in cp.stdout, cp


async def _iso(lab: Flat, tiny: TinyImage) -> dict[str, Any]:
    """The tiny ISO as an image (added once per controller)."""
    if "iso" not in lab.ctl.ids:
        inv = await lab.ctl.inv("AddImage", name="tiny-iso", url=f"file://{tiny.iso}", format="iso", mediaType="ISO")
        lab.ctl.ids["iso"] = inv["uuid"]
    return {"uuid": lab.ctl.ids["iso"]}


async def test_vm_from_iso_installs_then_boots_from_disk(lab: Flat, tiny: TinyImage, tmp_path: Path) -> None:
    c = lab.ctl
    iso = await _iso(lab, tiny)
    disk = await c.inv("CreateDiskOffering", name="root", diskSize=32 * MiB)
    t0 = time.monotonic()
    vm = await _create(lab, "iso-vm", iso["uuid"], rootDiskOfferingUuid=disk["uuid"])
    assert vm["state"] == "Running", vm
    dev, end = await _next_boot(lab, vm, 0)
    assert dev == "cdrom"
    await _lease(lab, vm, end)
    print(f"\nISO VM: create to lease {time.monotonic() - t0:.1f} s")
    assert "vda" in await lab.ssh_ok(vm, "cat /proc/partitions")
    await _install_disk(lab, vm, tiny, tmp_path)
    # (a) the installer's reboot inside the guest: the agent restarts the VM from its disk
    size = len(lab.console(vm))
    t0 = time.monotonic()
    await lab.ssh(vm, "reboot")
    dev, end = await _next_boot(lab, vm, size)
    print(f"guest reboot to 'booted from disk' (CD-then-disk switch): {time.monotonic() - t0:.1f} s")
    assert dev == "disk", lab.console(vm)[size:]
    assert (await c.vm(vm["uuid"]))["state"] == "Running"
    await _lease(lab, vm, end)  # fully up (acpid too): RebootVmInstance's ACPI request is not lost
    # (b) the boot order through the API, applied by RebootVmInstance
    assert (await c.inv("GetVmBootOrder", uuid=vm["uuid"]))["order"] == ["HardDisk"]
    for order, want in ((["CdRom", "HardDisk"], "cdrom"), (["HardDisk", "CdRom"], "disk")):
        await c.inv("SetVmBootOrder", uuid=vm["uuid"], bootOrder=order)
        assert (await c.inv("GetVmBootOrder", uuid=vm["uuid"]))["order"] == order
        size = len(lab.console(vm))
        t0 = time.monotonic()
        assert (await c.inv("RebootVmInstance", uuid=vm["uuid"]))["state"] == "Running"
        dev, end = await _next_boot(lab, vm, size)
        assert dev == want, (order, lab.console(vm)[size:])
        await _lease(lab, vm, end)
        print(f"RebootVmInstance with boot order {order} to lease: {time.monotonic() - t0:.1f} s")
    await c.inv("DestroyVmInstance", uuid=vm["uuid"])


CD001 = "dd if=/dev/sr0 bs=2048 skip=16 count=1 2>&1 | grep -c CD001"


async def test_live_iso_attach_and_detach(lab: Flat, tiny: TinyImage) -> None:
    c = lab.ctl
    iso = await _iso(lab, tiny)
    vm = await _create(lab, "live-iso", c.ids["image"])
    await _lease(lab, vm, 0)
    cp = await lab.ssh(vm, CD001)
    assert "1" not in cp.stdout.split(), cp  # the empty drive has no medium
    await c.inv("AttachIsoToVmInstance", vmInstanceUuid=vm["uuid"], isoUuid=iso["uuid"])
    assert (await lab.ssh_ok(vm, CD001)).split() == ["1"]
    # the ISO is kept across a stop/start (the iso:: tag goes into /vm/start)
    await c.inv("StopVmInstance", uuid=vm["uuid"])
    size = len(lab.console(vm))
    vm = await c.inv("StartVmInstance", uuid=vm["uuid"])
    await _lease(lab, vm, size)
    assert (await lab.ssh_ok(vm, CD001)).split() == ["1"]
    await c.inv("DetachIsoFromVmInstance", vmInstanceUuid=vm["uuid"])
    cp = await lab.ssh(vm, CD001)
    assert cp.returncode != 0 and "1" not in cp.stdout.split(), cp
    await c.inv("DestroyVmInstance", uuid=vm["uuid"])


def _rfb_banner(ip: str, port: int) -> bytes:
    with socket.create_connection((ip, port), timeout=5) as s:
        return s.recv(12)


def _spice_link(ip: str, port: int) -> bytes:
    """Send a SpiceLinkHeader + SpiceLinkMess for the main channel; the server's reply header starts REDQ."""
    mess = struct.pack("<IBBIII", 0, 1, 0, 0, 0, 18)  # connection id, channel main, id 0, no caps, caps offset
    header = b"REDQ" + struct.pack("<III", 2, 2, len(mess))
    with socket.create_connection((ip, port), timeout=5) as s:
        s.sendall(header + mess)
        return s.recv(16)


async def _console(lab: Flat, vm: dict[str, Any], protocol: str) -> None:
    addr = await lab.ctl.inv("GetVmConsoleAddress", uuid=vm["uuid"])
    h = lab.hosts[vm["hostUuid"]]
    assert addr["protocol"] == protocol and addr["hostIp"] == h.ip, addr
    if protocol == "vnc":
        banner = await asyncio.to_thread(_rfb_banner, addr["hostIp"], addr["port"])
        assert banner.startswith(b"RFB 003.00") and banner.endswith(b"\n"), banner
    else:
        reply = await asyncio.to_thread(_spice_link, addr["hostIp"], addr["port"])
        assert reply[:4] == b"REDQ" and struct.unpack("<II", reply[4:12]) == (2, 2), reply


async def _restart(lab: Flat, vm: dict[str, Any]) -> dict[str, Any]:
    await lab.ctl.inv("StopVmInstance", uuid=vm["uuid"], type="cold")
    return await lab.ctl.inv("StartVmInstance", uuid=vm["uuid"])


def _running_xml(lab: Flat, vm: dict[str, Any]) -> str:
    return lab.hosts[vm["hostUuid"]].run("virsh", "-c", "qemu:///system", "dumpxml", vm["uuid"]).stdout


async def _free_memory(lab: Flat) -> dict[str, int]:
    rows = await lab.core.db.fetchall("SELECT uuid, availableMemoryCapacity FROM Host")
    return {r["uuid"]: r["availableMemoryCapacity"] for r in rows}


def _cpu_model(xml: str) -> str:
    m = re.search(r"(?s)<cpu mode='(?:custom|host-model)'[^>]*>.*?<model[^>]*>([^<]+)</model>", xml)
    assert m, xml
    return m.group(1)


async def _config(lab: Flat, name: str, value: str) -> None:
    await lab.ctl.inv("UpdateGlobalConfig", category="kvm", name=name, value=value)


async def test_console_protocols_and_cpu_modes(lab: Flat) -> None:
    c = lab.ctl
    vm = await _create(lab, "console", c.ids["image"])
    assert _cpu_model(_running_xml(lab, vm)) == "qemu64"  # cpuMode none: QEMU's default model under TCG
    await _console(lab, vm, "vnc")
    await _config(lab, "vm.consoleMode", "spice")
    assert (await c.inv("GetVmConsoleAddress", uuid=vm["uuid"]))["protocol"] == "vnc"  # at the next start
    vm = await _restart(lab, vm)
    await _console(lab, vm, "spice")
    await _config(lab, "vm.consoleMode", "vnc")
    # cpuMode host-model: TCG libvirt expands it in the running domain
    await _config(lab, "vm.cpuMode", "host-model")
    vm = await _restart(lab, vm)
    # libvirt expands host-model into a custom model: the host's, as domcapabilities names it for TCG
    caps = lab.hosts[vm["hostUuid"]].run("virsh", "-c", "qemu:///system", "domcapabilities", "--virttype",
                                         "qemu").stdout
    host_model = re.search(r"(?s)<mode name='host-model' supported='yes'>.*?<model[^>]*>([^<]+)</model>", caps)
    assert host_model, caps
    print(f"\nhost-model runs as the custom model {host_model.group(1)}")
    assert _cpu_model(_running_xml(lab, vm)) == host_model.group(1) != "qemu64"
    await _config(lab, "vm.cpuMode", "host-passthrough")
    await c.inv("StopVmInstance", uuid=vm["uuid"], type="cold")
    free = await _free_memory(lab)
    status, body = await c.raw("StartVmInstance", uuid=vm["uuid"])
    assert status != 200 or not body.get("success"), body
    text = str(body.get("error"))
    assert "host-passthrough" in text and "TCG" in text, body
    assert (await c.vm(vm["uuid"]))["state"] == "Stopped"
    assert await _free_memory(lab) == free  # the failed start gave its capacity back
    flat = [st for host_uuid in lab.hosts for st in await lab.status(host_uuid)]
    assert flat and all(st.nicCount == 0 for st in flat), flat  # and its DHCP entry
    await _config(lab, "vm.cpuMode", "none")
    assert (await c.inv("StartVmInstance", uuid=vm["uuid"]))["state"] == "Running"
    await c.inv("DestroyVmInstance", uuid=vm["uuid"])
