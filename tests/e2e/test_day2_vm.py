"""Issue 17's day-2 VM operations end to end on the testbed, on tiny guests driven through the controller's API.

* A NIC hot-added to a running VM (AttachL3NetworkToVm on a second Flat-DHCP L3) appears in the guest, which
  gets its lease from the host's flat DHCP on the new L3; DetachL3NetworkFromVm removes it from the guest (the
  device-removed event) and from the host's DHCP, and releases its IP.
* A stopped VM given a bigger instance offering (ChangeInstanceOffering) starts with the new vCPU count and
  memory, as the guest itself reports them.
* Data written by a running VM to its disk survives CreateRootVolumeTemplateFromRootVolume (taken while it
  runs, through a live snapshot) onto an SFTP backup storage on host 2: a new VM created from that image on
  the OTHER host reads it. (The tiny guest's root file system lives in RAM, so the "file" is a marker block
  written with dd into the unused gap between the MBR and the boot partition of its disk.)
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from lab import PS_URL, Testbed, TinyImage
from test_flatnet import Flat, flat_lab
from test_sftp_backup_storage import BS_URL

MiB = 1 << 20

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(testbed: Testbed, tiny: TinyImage, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Flat]:
    async with flat_lab("day2vm", testbed, tiny, tmp_path_factory.mktemp("day2vm"), services=True,
                        paths=(PS_URL, "/var/lib/zstack-py/console", BS_URL), log_tail=25) as lab:
        yield lab


async def _create(lab: Flat, name: str, **extra: Any) -> dict[str, Any]:
    c = lab.ctl
    return await c.inv("CreateVmInstance", name=name, instanceOfferingUuid=c.ids["offering"], imageUuid=c.ids["image"],
                       l3NetworkUuids=[c.ids["l3"]], systemTags=[f"sshkey::{lab.pub}"], **extra)


async def _ssh_ok(lab: Flat, vm: dict[str, Any], command: str, timeout: float = 60) -> str:
    """``command`` in the guest over SSH from the namespace of the VM's first L3 (this host serves two L3s,
    which Flat.ssh does not expect), retried until sshd answers; its stdout."""
    sts = {s.l3NetworkUuid: s for s in await lab.status(vm["hostUuid"])}
    ns = sts[lab.ctl.ids["l3"]].namespace
    argv = ["ip", "netns", "exec", ns, "ssh", "-i", str(lab.key), "-o", "BatchMode=yes", "-o",
            "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
            "ConnectTimeout=5", f"root@{vm['vmNics'][0]['ip']}", command]
    deadline = time.monotonic() + timeout
    while True:
        cp = await asyncio.to_thread(lab.hosts[vm["hostUuid"]].run, *argv, check=False, timeout=120)
        if cp.returncode == 0:
            return str(cp.stdout)
        if time.monotonic() > deadline:
            raise AssertionError(f"ssh {command!r} to {vm['name']}: rc={cp.returncode} {cp.stderr} {cp.stdout}")
        await asyncio.sleep(1)


async def _second_l3(lab: Flat) -> str:
    """A second L3 (10.102.0.0/24) on the records' L2, with Flat DHCP."""
    c = lab.ctl
    l2 = (await c.raw("QueryL3Network", conditions=[{"name": "uuid", "op": "=", "value": c.ids["l3"]}]))[1][
        "inventories"][0]["l2NetworkUuid"]
    l3 = (await c.inv("CreateL3Network", name="l3-b", l2NetworkUuid=l2))["uuid"]
    await c.inv("AddIpRange", l3NetworkUuid=l3, name="rb", startIp="10.102.0.10", endIp="10.102.0.200",
                netmask="255.255.255.0", gateway="10.102.0.1")
    flat = (await c.raw("QueryNetworkServiceProvider", conditions=[
        {"name": "type", "op": "=", "value": "Flat"}]))[1]["inventories"][0]["uuid"]
    await c.inv("AttachNetworkServiceToL3Network", l3NetworkUuid=l3, networkServices={flat: ["DHCP"]})
    return str(l3)


async def test_nic_hot_plug_lease_and_removal(lab: Flat) -> None:
    c = lab.ctl
    vm = await _create(lab, "nic-hotplug")
    await _ssh_ok(lab, vm, "true", timeout=120)
    l3b = await _second_l3(lab)
    attachable = (await c.raw("GetVmAttachableL3Network", vmInstanceUuid=vm["uuid"]))[1]["inventories"]
    assert [i["uuid"] for i in attachable] == [l3b]
    inv = await c.inv("AttachL3NetworkToVm", vmInstanceUuid=vm["uuid"], l3NetworkUuid=l3b)
    nic = next(n for n in inv["vmNics"] if n["l3NetworkUuid"] == l3b)
    assert nic["ip"].startswith("10.102.0.") and nic["deviceId"] == 1
    # the guest sees a new NIC with that MAC, and gets the allocated address from the host's flat DHCP
    found = await _ssh_ok(lab, vm, f"for i in 1 2 3 4 5 6 7 8 9 10; do grep -l -i {nic['mac']} "
                                 "/sys/class/net/*/address && break; sleep 1; done", timeout=60)
    dev = found.strip().split("/")[-2]
    assert dev == "eth1", found
    out = await _ssh_ok(lab, vm, "ip link set eth1 up && busybox timeout 30 udhcpc -i eth1 -n -q -t 5 -T 2 "
                               "-s /usr/share/udhcpc/default.script 2>&1; ip -4 addr show eth1", timeout=90)
    assert f"inet {nic['ip']}/24" in out, out
    sts = {s.l3NetworkUuid: s for s in await lab.status(vm["hostUuid"])}
    assert sts[l3b].nicCount == 1, sts
    ping = lab.hosts[vm["hostUuid"]].run("ip", "netns", "exec", sts[l3b].namespace, "busybox", "ping", "-c", "1",
                                         "-W", "3", nic["ip"], check=False)
    assert ping.returncode == 0, ping
    # removed cleanly: gone from the guest, the domain and the host's DHCP; the IP is free again
    inv = await c.inv("DetachL3NetworkFromVm", vmNicUuid=nic["uuid"])
    assert [n["l3NetworkUuid"] for n in inv["vmNics"]] == [c.ids["l3"]]
    out = await _ssh_ok(lab, vm, "ls /sys/class/net")
    assert "eth1" not in out.split() and "eth0" in out.split(), out
    h = lab.hosts[vm["hostUuid"]]
    assert nic["mac"] not in h.run("virsh", "-c", "qemu:///system", "dumpxml", vm["uuid"]).stdout
    used = await lab.core.db.fetchone("SELECT COUNT(*) FROM UsedIp WHERE ip=?", (nic["ip"],))
    assert used[0] == 0
    sts = {s.l3NetworkUuid: s for s in await lab.status(vm["hostUuid"])}
    assert l3b not in sts or sts[l3b].nicCount == 0, sts
    await c.inv("DestroyVmInstance", uuid=vm["uuid"])


async def test_stopped_vm_resized_starts_with_new_cpu_and_memory(lab: Flat) -> None:
    c = lab.ctl
    vm = await _create(lab, "resize")
    await _ssh_ok(lab, vm, "true", timeout=120)
    cpus = await _ssh_ok(lab, vm, "grep -c ^processor /proc/cpuinfo")
    assert cpus.strip() == "1"
    before_kib = int(re.search(r"MemTotal:\s+(\d+)", await _ssh_ok(lab, vm, "cat /proc/meminfo")).group(1))  # type: ignore[union-attr]
    big = await c.inv("CreateInstanceOffering", name="bigger", cpuNum=2, cpuSpeed=1000, memorySize=256 * MiB)
    await c.inv("StopVmInstance", uuid=vm["uuid"])
    inv = await c.inv("ChangeInstanceOffering", vmInstanceUuid=vm["uuid"], instanceOfferingUuid=big["uuid"])
    assert (inv["cpuNum"], inv["memorySize"]) == (2, 256 * MiB)
    vm = await c.inv("StartVmInstance", uuid=vm["uuid"])
    assert await _ssh_ok(lab, vm, "grep -c ^processor /proc/cpuinfo", timeout=120) == "2\n"
    after_kib = int(re.search(r"MemTotal:\s+(\d+)", await _ssh_ok(lab, vm, "cat /proc/meminfo")).group(1))  # type: ignore[union-attr]
    # MemTotal is the RAM less what the kernel keeps: 128 MiB more RAM shows as (nearly) 128 MiB more
    assert 120 * 1024 < after_kib - before_kib <= 128 * 1024, (before_kib, after_kib)
    await c.inv("DestroyVmInstance", uuid=vm["uuid"])


MARK_SECTOR = 1024  # 512 KiB into the disk: inside the 1 MiB gap before the boot partition (PART_START 2048)


async def test_golden_image_from_running_vm_on_the_other_host(lab: Flat, testbed: Testbed) -> None:
    c = lab.ctl
    h2 = testbed.hosts[1]
    bs = await c.inv("AddSftpBackupStorage", name="bs", hostname=h2.ip, username=h2.ssh_user,
                     password=h2.ssh_password, url=BS_URL)
    zone = (await c.raw("QueryZone", conditions=[]))[1]["inventories"][0]["uuid"]
    await c.inv("AttachBackupStorageToZone", backupStorageUuid=bs["uuid"], zoneUuid=zone)
    first, second = list(lab.hosts)
    vm = await _create(lab, "golden", hostUuid=first)
    token = f"ZSTACK-DAY2-GOLDEN-{vm['uuid']}"
    await _ssh_ok(lab, vm, f"printf '%s\\n' {token} | dd of=/dev/vda bs=512 seek={MARK_SECTOR} conv=fsync "
                           "2>/dev/null && sync", timeout=120)
    read = f"dd if=/dev/vda bs=512 skip={MARK_SECTOR} count=1 2>/dev/null | head -n 1"
    assert (await _ssh_ok(lab, vm, read)).strip() == token
    image = await c.inv("CreateRootVolumeTemplateFromRootVolume", rootVolumeUuid=vm["rootVolumeUuid"],
                        name="golden-img", backupStorageUuids=[bs["uuid"]])
    assert (image["status"], image["mediaType"], image["downloadProgress"]) == ("Ready", "RootVolumeTemplate", 100)
    snaps = (await c.raw("QueryVolumeSnapshot", conditions=[
        {"name": "volumeUuid", "op": "=", "value": vm["rootVolumeUuid"]}]))[1]["inventories"]
    assert [s["name"] for s in snaps] == [f"for image {image['uuid']}"]     # the live snapshot it was taken from
    assert (await c.vm(vm["uuid"]))["state"] == "Running"
    path = f"{BS_URL}/images/{image['uuid']}/{image['uuid']}.qcow2"
    assert h2.run("md5sum", path).stdout.split()[0] == image["md5Sum"]
    clone = await c.inv("CreateVmInstance", name="from-golden", instanceOfferingUuid=c.ids["offering"],
                        imageUuid=image["uuid"], l3NetworkUuids=[c.ids["l3"]], systemTags=[f"sshkey::{lab.pub}"],
                        hostUuid=second)
    assert clone["hostUuid"] == second
    assert (await _ssh_ok(lab, clone, read, timeout=120)).strip() == token
    for v in (vm, clone):
        await c.inv("DestroyVmInstance", uuid=v["uuid"])
