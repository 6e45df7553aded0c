"""Issue 5 end to end on the testbed (real agents, qemu-img, TCG guests; /var/lib/zstack-py is private to
each host, so the PS url under it is a real per-host local storage): a VM with a data volume and 3 snapshots
whose volumes move to the other host with LocalStorageMigrateVolume (agent-to-agent copy), and a copy
killed half-way (SIGKILL of the destination agent) that leaves the source usable and nothing behind."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import test_compute as tc
from lab import PS_URL, LabHost, Testbed, TinyImage, kill_agent, reset_host

MiB = 1 << 20


@pytest.fixture
async def ctl(testbed: Testbed, tiny: TinyImage) -> AsyncIterator[tc.Ctl]:
    async with tc.running_controller("localstorage", tiny) as c:
        try:
            yield c
        finally:
            for h in testbed.hosts:
                reset_host(h)


async def _hosts(ctl: tc.Ctl, testbed: Testbed) -> list[tuple[str, LabHost]]:
    out = []
    for h in testbed.hosts[:2]:
        out.append(((await ctl.add_host(h))["uuid"], h))
    return out


def _qemu_io(host: LabHost, path: str, op: str, *, readonly: bool = False) -> str:
    flags = ["-r", "-U"] if readonly else []
    cp = host.run("qemu-io", *flags, "-f", "qcow2", "-c", op, path, timeout=300)
    assert "failed" not in cp.stdout.lower() and "error" not in cp.stdout.lower(), cp.stdout
    return cp.stdout


def _files(host: LabHost, path: str) -> list[str]:
    cp = host.run("sh", "-c", f"find {path} -type f 2>/dev/null || true")
    return sorted(cp.stdout.split())


async def _adds_up(ctl: tc.Ctl) -> None:
    ps = (await ctl.inv("QueryPrimaryStorage", conditions=[]))["inventories"][0]
    caps = (await ctl.inv("GetLocalStorageHostDiskCapacity", primaryStorageUuid=ps["uuid"]))["inventories"]
    refs = (await ctl.inv("QueryLocalStorageResourceRef", conditions=[]))["inventories"]
    for c in caps:
        used = sum(r["size"] for r in refs if r["hostUuid"] == c["hostUuid"])
        assert c["availableCapacity"] == c["totalCapacity"] - used, (c, refs)
    assert ps["availableCapacity"] == sum(c["availableCapacity"] for c in caps)


async def _migrate(ctl: tc.Ctl, volume: str, dest: str) -> dict[str, Any]:
    t0 = time.monotonic()
    ref = await ctl.inv("LocalStorageMigrateVolume", volumeUuid=volume, destHostUuid=dest)
    print(f"\nmigrate volume {volume}: {time.monotonic() - t0:.1f} s")
    assert ref["hostUuid"] == dest
    return ref


async def test_local_storage_migration(testbed: Testbed, ctl: tc.Ctl) -> None:
    """Both scenarios on one pair of hosts (adding the hosts again right after their agents stopped is slow)."""
    hosts = await _hosts(ctl, testbed)
    await _moves_to_other_host(ctl, hosts)
    await _copy_killed_half_way(ctl, hosts)


async def _moves_to_other_host(ctl: tc.Ctl, hosts: list[tuple[str, LabHost]]) -> None:
    (u0, h0), (u1, h1) = hosts
    vm = await ctl.inv("CreateVmInstance", name="vm", instanceOfferingUuid=ctl.ids["offering"],
                       imageUuid=ctl.ids["image"], l3NetworkUuids=[ctl.ids["l3"]], hostUuid=u0)
    off = await ctl.inv("CreateDiskOffering", name="d", diskSize=256 * MiB)
    vol = await ctl.inv("CreateDataVolume", name="data", diskOfferingUuid=off["uuid"])
    vol = await ctl.inv("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=vol["uuid"])  # live
    await asyncio.sleep(8)  # let the guest boot far enough to power off on ACPI
    await ctl.inv("StopVmInstance", uuid=vm["uuid"])
    _qemu_io(h0, vol["installPath"], "write -P 0x5a 1M 64k")
    snaps = [await ctl.inv("CreateVolumeSnapshot", volumeUuid=vol["uuid"], name=f"s{i}") for i in range(3)]
    root = (await ctl.inv("QueryVolume", conditions=[{"name": "uuid", "op": "=", "value": vm["rootVolumeUuid"]}])
            )["inventories"][0]
    await ctl.inv("DetachDataVolumeFromVm", uuid=vol["uuid"])
    await _migrate(ctl, vol["uuid"], u1)
    await _migrate(ctl, root["uuid"], u1)
    await _adds_up(ctl)
    await ctl.inv("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=vol["uuid"])
    started = await ctl.inv("StartVmInstance", uuid=vm["uuid"])
    assert started["hostUuid"] == u1 and tc._domstate(h1, vm["uuid"]) == "running"
    _qemu_io(h1, vol["installPath"], "read -P 0x5a 1M 64k", readonly=True)
    for d in (Path(vol["installPath"]).parent, Path(root["installPath"]).parent):
        assert _files(h0, str(d)) == [], f"source host still has {d}"
    for s in snaps:
        assert _files(h1, s["primaryStorageInstallPath"]) == [s["primaryStorageInstallPath"]]
    await ctl.inv("StopVmInstance", uuid=vm["uuid"])
    await ctl.inv("RevertVolumeFromSnapshot", uuid=snaps[1]["uuid"])
    _qemu_io(h1, vol["installPath"], "read -P 0x5a 1M 64k", readonly=True)
    assert (await ctl.inv("StartVmInstance", uuid=vm["uuid"]))["hostUuid"] == u1
    await _adds_up(ctl)


async def _copy_killed_half_way(ctl: tc.Ctl, hosts: list[tuple[str, LabHost]]) -> None:
    (u0, h0), (u1, h1) = hosts
    vm = await ctl.inv("CreateVmInstance", name="vm2", instanceOfferingUuid=ctl.ids["offering"],
                       imageUuid=ctl.ids["image"], l3NetworkUuids=[ctl.ids["l3"]], hostUuid=u0)
    off = await ctl.inv("CreateDiskOffering", name="big", diskSize=1024 * MiB)
    vol = await ctl.inv("CreateDataVolume", name="big", diskOfferingUuid=off["uuid"])
    await ctl.inv("StopVmInstance", uuid=vm["uuid"])  # attach to a Stopped VM instantiates the volume too
    vol = await ctl.inv("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=vol["uuid"])
    await ctl.inv("DetachDataVolumeFromVm", uuid=vol["uuid"])
    _qemu_io(h0, vol["installPath"], "write -P 0x33 0 512M")
    refs_before = (await ctl.inv("QueryLocalStorageResourceRef", conditions=[]))["inventories"]
    task = asyncio.create_task(ctl.raw("LocalStorageMigrateVolume", volumeUuid=vol["uuid"], destHostUuid=u1))
    deadline = time.monotonic() + 60
    while not task.done() and time.monotonic() < deadline:  # kill once the copy has started writing on h1
        if h1.run("sh", "-c", f"find {PS_URL}/dataVolumes -path '*{vol['uuid']}*' -type f 2>/dev/null | head -1"
                  ).stdout.strip():
            break
        await asyncio.sleep(0.05)
    assert not task.done(), "the copy finished before it could be killed: use a bigger volume"
    kill_agent(h1, signal.SIGKILL)
    status, body = await task
    assert status >= 400 and not body["success"], body
    assert (await ctl.inv("QueryLocalStorageResourceRef", conditions=[]))["inventories"] == refs_before
    _qemu_io(h0, vol["installPath"], "read -P 0x33 0 512M", readonly=True)
    rec = await ctl.inv("ReconnectHost", uuid=u1)
    assert rec["status"] == "Connected"
    left = _files(h1, str(Path(vol["installPath"]).parent))
    assert left == [], f"partial files left on the destination: {left}"
    await _adds_up(ctl)
    await ctl.inv("AttachDataVolumeToVm", vmInstanceUuid=vm["uuid"], volumeUuid=vol["uuid"])
