"""Live volume snapshot end to end on the testbed: a running tiny-image VM (real agent, libvirt, QEMU under
TCG) writes marker A to its root disk, CreateVolumeSnapshot is taken while it runs (the VM stays Running
and keeps writing: marker B), then stop, RevertVolumeFromSnapshot, start: A is on the disk, B is not.
The volume's installPath never changes and its chain on the host is V <- S <- image cache.

Markers go to sectors 1024 and 1536 of ``/dev/vda``: the tiny disk's gap between the MBR and its first
partition (LBA 2048), all zeros in the image, so the guest still boots from the reverted disk."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lab import PS_URL, LabHost, Testbed, TinyImage
from test_compute import _domstate
from test_flatnet import Flat, flat_lab

SECTOR_A, SECTOR_B = 1024, 1536


@pytest.fixture
async def lab(testbed: Testbed, tiny: TinyImage, tmp_path: Path) -> AsyncIterator[Flat]:
    """A controller with the first testbed host and flat DHCP + user data (the SSH key) on the L3."""
    async with flat_lab("livesnap", testbed, tiny, tmp_path, hosts=1, services=True,
                        paths=(PS_URL, "/var/lib/zstack-py/console"), log_tail=25) as lab:
        yield lab


async def _write_marker(lab: Flat, vm: dict[str, Any], sector: int, text: str) -> None:
    await lab.ssh_ok(vm, f"printf '{text}' | dd of=/dev/vda bs=512 seek={sector} conv=fsync 2>/dev/null && sync")


async def _read_sector(lab: Flat, vm: dict[str, Any], sector: int) -> str:
    """The sector as text (NULs dropped), read with O_DIRECT so the guest's page cache cannot answer."""
    out = await lab.ssh_ok(vm, f"dd if=/dev/vda bs=512 skip={sector} count=1 iflag=direct 2>/dev/null | tr -d '\\000'")
    return out.strip()


def _chain(host: LabHost, path: str) -> list[str]:
    cp = host.run("qemu-img", "info", "-U", "--backing-chain", "--output=json", path)
    return [i["filename"] for i in json.loads(cp.stdout)]


async def test_live_snapshot_then_revert(lab: Flat) -> None:
    c = lab.ctl
    a, b = f"LIVESNAP-A-{uuid.uuid4().hex[:8]}", f"LIVESNAP-B-{uuid.uuid4().hex[:8]}"
    vm = await c.inv("CreateVmInstance", name="live", instanceOfferingUuid=c.ids["offering"],
                     imageUuid=c.ids["image"], l3NetworkUuids=[c.ids["l3"]], systemTags=[f"sshkey::{lab.pub}"])
    host = lab.hosts[vm["hostUuid"]]
    tags = await c.inv("QuerySystemTag", conditions=[{"name": "resourceUuid", "op": "=", "value": vm["hostUuid"]},
                                                     {"name": "tag", "op": "=", "value": "capability:liveSnapshot"}])
    assert len(tags["inventories"]) == 1, "the real host reports live snapshots (1.0's host tag)"
    ip = re.escape(vm["vmNics"][0]["ip"])
    await lab.wait_console(vm, rf"tiny: LEASE eth0 {ip}/", after=0)
    await _write_marker(lab, vm, SECTOR_A, a)
    assert await _read_sector(lab, vm, SECTOR_A) == a
    vol_q = [{"name": "uuid", "op": "=", "value": vm["rootVolumeUuid"]}]
    volume = (await c.inv("QueryVolume", conditions=vol_q))["inventories"][0]
    # the snapshot, taken while the VM runs
    t0 = time.monotonic()
    snap = await c.inv("CreateVolumeSnapshot", volumeUuid=volume["uuid"], name="live-a")
    print(f"\nlive CreateVolumeSnapshot: {time.monotonic() - t0:.2f} s")
    assert (await c.vm(vm["uuid"]))["state"] == "Running" and _domstate(host, vm["uuid"]) == "running"
    after = (await c.inv("QueryVolume", conditions=vol_q))["inventories"][0]
    assert after["installPath"] == volume["installPath"], "the volume path must never change"
    chain = _chain(host, volume["installPath"])
    assert chain[:2] == [volume["installPath"], snap["primaryStorageInstallPath"]], chain
    assert len(chain) == 3 and chain[2].startswith(f"{PS_URL}/imagecache/"), chain
    # the live path was taken: QEMU's active layer is the volume file, also named live/<snapshot uuid>.qcow2
    live_top = str(Path(volume["installPath"]).parent / "live" / f"{snap['uuid']}.qcow2")
    inodes = host.run("stat", "-c", "%i", volume["installPath"], live_top).stdout.split()
    assert len(inodes) == 2 and inodes[0] == inodes[1], inodes
    # the guest keeps working on the new layer
    await _write_marker(lab, vm, SECTOR_B, b)
    assert await _read_sector(lab, vm, SECTOR_B) == b and await _read_sector(lab, vm, SECTOR_A) == a
    assert "LIVESNAP" not in host.run("qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -v {SECTOR_B * 512} 512",
                                      snap["primaryStorageInstallPath"]).stdout, "B leaked into the snapshot"
    # offline revert: stop, revert, start; A is there, B is not
    await c.inv("StopVmInstance", uuid=vm["uuid"])
    await c.inv("RevertVolumeFromSnapshot", uuid=snap["uuid"])
    offset = len(await asyncio.to_thread(lab.console, vm))
    assert (await c.inv("StartVmInstance", uuid=vm["uuid"]))["state"] == "Running"
    await lab.wait_console(vm, rf"tiny: LEASE eth0 {ip}/", after=offset)
    assert await _read_sector(lab, vm, SECTOR_A) == a
    assert await _read_sector(lab, vm, SECTOR_B) == ""
    assert _chain(host, volume["installPath"])[:2] == [volume["installPath"], snap["primaryStorageInstallPath"]]
