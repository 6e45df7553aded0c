"""The seed's image path end to end on the testbed: an SFTP backup storage on testbed host 2 (real sshd, root
password), AddImage downloading a ``file://`` image into it over SFTP (inspected there with ``qemu-img``), and
a VM on host 1 whose agent fetches that image over SFTP from host 2 into its own image cache and boots it.

The image's source file is deleted right after AddImage, so host 1 can only have got its copy from host 2's
backup storage (``/var/lib/zstack-py`` is private to each testbed host: the BS directory exists only there).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lab import PS_URL, LabHost, Testbed, TinyImage, reset_host, ssh_keypair
from test_compute import Ctl, _domstate, running_controller
from test_flatnet import Flat

BS_URL = "/var/lib/zstack-py/e2e-bs"  # on host 2 only (a private directory of each testbed host)
CONSOLE = "/var/lib/zstack-py/console"


@pytest.fixture
async def ctl(testbed: Testbed, tiny: TinyImage) -> AsyncIterator[Ctl]:
    """An in-process controller with the usual records (zone, cluster, flat-capable L3, local PS, offering);
    afterwards every image and backup storage is deleted through the API and both hosts are reset (the BS
    directory on host 2 included), pass or fail."""
    async with running_controller("backup-storage", tiny) as c:
        try:
            yield c
        finally:
            try:
                await _delete_everything(c)
            finally:
                for h in testbed.hosts:
                    reset_host(h, flat=True, paths=(PS_URL, BS_URL, CONSOLE), log_tail=25)


async def _query(ctl: Ctl, name: str, **cond: str) -> list[dict[str, Any]]:
    conditions = [{"name": k, "op": "=", "value": v} for k, v in cond.items()]
    status, body = await ctl.raw(name, conditions=conditions)
    assert status == 200, body
    return list(body["inventories"])


async def _delete_everything(ctl: Ctl) -> None:
    """DeleteImage (Direct: the bits go from the storage) and DeleteBackupStorage for whatever exists."""
    await ctl.inv("UpdateGlobalConfig", category="image", name="deletionPolicy", value="Direct")
    for vm in await _query(ctl, "QueryVmInstance"):
        if vm["state"] != "Destroyed":
            await ctl.raw("DestroyVmInstance", uuid=vm["uuid"])
    for image in await _query(ctl, "QueryImage"):
        await ctl.inv("DeleteImage", uuid=image["uuid"])
    for bs in await _query(ctl, "QueryBackupStorage"):
        await ctl.inv("DeleteBackupStorage", uuid=bs["uuid"])


def _local_facts(path: Path) -> tuple[str, int, int]:
    """(md5, size, virtual size) of a local image file."""
    h = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                                     capture_output=True, text=True).stdout)
    return h.hexdigest(), path.stat().st_size, int(info["virtual-size"])


def _remote_md5(host: LabHost, path: str) -> str | None:
    """md5 of ``path`` as seen inside ``host`` (its mount namespace), None when it does not exist there."""
    cp = host.run("sh", "-c", f"test -f '{path}' && md5sum '{path}'", check=False)
    return cp.stdout.split()[0] if cp.returncode == 0 else None


async def test_add_sftp_backup_storage_with_wrong_password(testbed: Testbed, ctl: Ctl) -> None:
    h2 = testbed.hosts[1]
    wrong = "not-the-password-7d1"
    status, body = await ctl.raw("AddSftpBackupStorage", name="bs", hostname=h2.ip, username=h2.ssh_user,
                                 password=wrong, url=BS_URL)
    err = body.get("error") or {}
    assert status == 409 and not body.get("success") and err.get("code") == "SYS.1006", body
    details = str(err.get("details"))
    assert "wrong username or password" in details and f"{h2.ssh_user}@{h2.ip}" in details, body
    assert wrong not in json.dumps(body)
    assert await _query(ctl, "QueryBackupStorage") == []
    assert h2.run("test", "-e", BS_URL, check=False).returncode != 0, "the failed add created its directory"


async def _add_bs(ctl: Ctl, h2: LabHost) -> dict[str, Any]:
    bs = await ctl.inv("AddSftpBackupStorage", name="bs", hostname=h2.ip, username=h2.ssh_user,
                       password=h2.ssh_password, url=BS_URL)
    assert bs["status"] == "Connected" and 0 < bs["availableCapacity"] <= bs["totalCapacity"], bs
    assert h2.run("test", "-d", BS_URL, check=False).returncode == 0, f"{BS_URL} not created on {h2.name}"
    (zone,) = await _query(ctl, "QueryZone")
    await ctl.inv("AttachBackupStorageToZone", backupStorageUuid=bs["uuid"], zoneUuid=zone["uuid"])
    (got,) = await _query(ctl, "QueryBackupStorage", uuid=bs["uuid"])
    assert got["attachedZoneUuids"] == [zone["uuid"]], got
    return got


async def _add_image(ctl: Ctl, testbed: Testbed, bs: dict[str, Any], src: Path) -> dict[str, Any]:
    """AddImage into ``bs`` (on host 2): Ready with the source's md5/size, the file on host 2 only."""
    h1, h2 = testbed.hosts[:2]
    md5, actual, virtual = await asyncio.to_thread(_local_facts, src)
    image = await ctl.inv("AddImage", name="tiny-bs", url=f"file://{src}", format="qcow2",
                          backupStorageUuids=[bs["uuid"]])
    assert image["status"] == "Ready" and image["md5Sum"] == md5, image
    assert image["actualSize"] == actual and image["size"] == virtual, (image, actual, virtual)
    (ref,) = image["backupStorageRefs"]
    assert ref["backupStorageUuid"] == bs["uuid"] and ref["status"] == "Ready", ref
    path = ref["installPath"]
    assert path.startswith(f"{BS_URL}/"), ref
    assert _remote_md5(h2, path) == md5, f"{path} on {h2.name} is missing or differs"
    here = await asyncio.to_thread(os.path.exists, path)
    assert not here and _remote_md5(h1, path) is None, "the image is not only on host 2"
    (after,) = await _query(ctl, "QueryBackupStorage", uuid=bs["uuid"])
    assert after["availableCapacity"] != bs["availableCapacity"], "capacity not re-measured after the download"
    assert after["totalCapacity"] == bs["totalCapacity"] and after["availableCapacity"] > 0, (bs, after)
    print(f"\nimage {image['uuid']}: {actual} bytes, BS available {bs['availableCapacity']} -> "
          f"{after['availableCapacity']}")
    return image


async def _boot_on_host1(ctl: Ctl, testbed: Testbed, image: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """A VM from the image on host 1 (flat DHCP on the L3): Running, image cached from host 2, guest leased."""
    h1 = testbed.hosts[0]
    provider = (await _query(ctl, "QueryNetworkServiceProvider", type="Flat"))[0]["uuid"]
    await ctl.inv("AttachNetworkServiceToL3Network", l3NetworkUuid=ctl.ids["l3"],
                  networkServices={provider: ["DHCP"]})
    host = await ctl.add_host(h1)
    assert host["status"] == "Connected", host
    vm = await ctl.inv("CreateVmInstance", name="vm-bs", instanceOfferingUuid=ctl.ids["offering"],
                       imageUuid=image["uuid"], l3NetworkUuids=[ctl.ids["l3"]], hostUuid=host["uuid"])
    assert vm["state"] == "Running" and vm["hostUuid"] == host["uuid"], vm
    assert _domstate(h1, vm["uuid"]) == "running"
    cached = f"{PS_URL}/imagecache/template/{image['uuid']}/{image['uuid']}.qcow2"
    assert _remote_md5(h1, cached) == image["md5Sum"], f"{cached} on {h1.name} is missing or differs"
    key, pub = ssh_keypair(tmp_path)
    flat = Flat(ctl, {host["uuid"]: h1}, key, pub)
    ip = vm["vmNics"][0]["ip"]
    m = await flat.wait_console(vm, r"tiny: LEASE eth0 (\S+)/", timeout=240)
    assert m.group(1) == ip, m.group(0)
    (st,) = await flat.status(host["uuid"])
    ping = h1.run("ip", "netns", "exec", st.namespace, "busybox", "ping", "-c", "1", "-W", "5", ip, check=False)
    assert ping.returncode == 0, ping
    logs = h1.run("sh", "-c", "cat /var/log/zstack-py/kvmagent.*", check=False).stdout
    assert "Starting SFTP get of " + image["backupStorageRefs"][0]["installPath"] in logs  # asyncssh's own line
    assert testbed.hosts[1].ssh_password not in logs, "the backup storage's password is in the agent's logs"
    return vm


async def test_image_from_sftp_backup_storage_boots_on_another_host(testbed: Testbed, ctl: Ctl, tiny: TinyImage,
                                                                    tmp_path: Path) -> None:
    h2 = testbed.hosts[1]
    bs = await _add_bs(ctl, h2)
    src = tmp_path / "tiny-copy.qcow2"
    await asyncio.to_thread(shutil.copyfile, tiny.qcow2, src)
    image = await _add_image(ctl, testbed, bs, src)
    src.unlink()  # from now on the backup storage on host 2 holds the only copy
    vm = await _boot_on_host1(ctl, testbed, image, tmp_path)
    await ctl.inv("DestroyVmInstance", uuid=vm["uuid"])
    # cleanup through the API, checked: Direct deletion removes the bits from host 2, then the storage goes
    path = image["backupStorageRefs"][0]["installPath"]
    await ctl.inv("UpdateGlobalConfig", category="image", name="deletionPolicy", value="Direct")
    await ctl.inv("DeleteImage", uuid=image["uuid"])
    assert await _query(ctl, "QueryImage", uuid=image["uuid"]) == []
    assert h2.run("test", "-e", path.rsplit("/", 1)[0], check=False).returncode != 0, f"{path} left on {h2.name}"
    await ctl.inv("DeleteBackupStorage", uuid=bs["uuid"])
    assert await _query(ctl, "QueryBackupStorage") == []


async def test_storage_that_refuses_the_image_file(testbed: Testbed, ctl: Ctl, tiny: TinyImage) -> None:
    """The BS directory on host 2 replaced by a plain file: AddImage fails with a clear 409 naming the path
    (it was a 500 "internal error" before) and leaves no image; ReconnectBackupStorage marks the storage
    Disconnected, and Connected again once the directory is back."""
    h2 = testbed.hosts[1]
    bs = await _add_bs(ctl, h2)
    h2.run("sh", "-c", f"rmdir {BS_URL} && echo not-a-dir > {BS_URL}")
    before = {i["uuid"] for i in await _query(ctl, "QueryImage")}
    status, body = await ctl.raw("AddImage", name="refused", url=f"file://{tiny.qcow2}", format="qcow2",
                                 backupStorageUuids=[bs["uuid"]])
    err = body.get("error") or {}
    assert status == 409 and err.get("code") == "SYS.1006", body
    assert f"cannot create {BS_URL}/images/" in err["details"] and "is not a directory" in err["details"], body
    assert {i["uuid"] for i in await _query(ctl, "QueryImage")} == before
    assert h2.run("cat", BS_URL).stdout == "not-a-dir\n"
    status, body = await ctl.raw("ReconnectBackupStorage", uuid=bs["uuid"])
    assert status == 409 and BS_URL in body["error"]["details"], body
    assert (await _query(ctl, "QueryBackupStorage", uuid=bs["uuid"]))[0]["status"] == "Disconnected"
    h2.run("rm", BS_URL)
    assert (await ctl.inv("ReconnectBackupStorage", uuid=bs["uuid"]))["status"] == "Connected"
    assert h2.run("test", "-d", BS_URL, check=False).returncode == 0


async def test_tampered_copy_is_refused_by_the_host(testbed: Testbed, ctl: Ctl, tiny: TinyImage) -> None:
    """A byte of the image changed on host 2 after AddImage: host 1's agent checks the md5 of what it fetched
    over SFTP, the VM creation fails naming the mismatch, and nothing is left: no cache file, no domain, the
    host's capacity back."""
    h1, h2 = testbed.hosts[:2]
    bs = await _add_bs(ctl, h2)
    image = await _add_image(ctl, testbed, bs, tiny.qcow2)
    path = image["backupStorageRefs"][0]["installPath"]
    h2.run("sh", "-c", f"printf Z | dd of='{path}' bs=1 seek={image['actualSize'] - 4096} conv=notrunc status=none")
    assert _remote_md5(h2, path) != image["md5Sum"]
    host = await ctl.add_host(h1)
    status, body = await ctl.raw("CreateVmInstance", name="vm-bad", instanceOfferingUuid=ctl.ids["offering"],
                                 imageUuid=image["uuid"], l3NetworkUuids=[ctl.ids["l3"]], hostUuid=host["uuid"])
    print(f"\nCreateVmInstance from a tampered copy: {status} {body}")
    assert status >= 400 and not body.get("success"), body
    details = json.dumps(body["error"])
    assert "md5" in details and image["md5Sum"] in details, body
    assert h2.ssh_password not in details, body
    vms = await _query(ctl, "QueryVmInstance")
    assert all(vm["state"] in ("Destroyed", "Error") for vm in vms), vms
    left = h1.run("sh", "-c", f"find {PS_URL}/imagecache -type f 2>/dev/null; "
                  "virsh -c qemu:///system list --all --name").stdout.split()
    assert left == [], f"left on {h1.name}: {left}"
    (after,) = await _query(ctl, "QueryHost", uuid=host["uuid"])
    assert after["availableMemoryCapacity"] == host["availableMemoryCapacity"], (host, after)
    assert after["availableCpuCapacity"] == host["availableCpuCapacity"], (host, after)


async def test_image_whose_storage_was_deleted_is_not_fetched_from_its_url(testbed: Testbed, ctl: Ctl,
                                                                          tiny: TinyImage, tmp_path: Path) -> None:
    """DeleteBackupStorage drops the image's only ref; a VM from that image must not make host 1 read the
    image's original ``file://`` url (a path on the controller; readable here only because the testbed hosts
    share /tmp): the creation fails naming the image, nothing cached, no domain."""
    h1, h2 = testbed.hosts[:2]
    bs = await _add_bs(ctl, h2)
    src = tmp_path / "tiny-copy.qcow2"
    await asyncio.to_thread(shutil.copyfile, tiny.qcow2, src)
    image = await _add_image(ctl, testbed, bs, src)
    await ctl.inv("DeleteBackupStorage", uuid=bs["uuid"])
    host = await ctl.add_host(h1)
    status, body = await ctl.raw("CreateVmInstance", name="vm-orphan", instanceOfferingUuid=ctl.ids["offering"],
                                 imageUuid=image["uuid"], l3NetworkUuids=[ctl.ids["l3"]], hostUuid=host["uuid"])
    print(f"\nCreateVmInstance from an image without backup storage: {status} {body}")
    # refused by CreateVmInstance's checks, before any VM row or host call
    assert status == 409 and body["error"]["code"] == "SYS.1006", body
    assert "no copy on any backup storage" in body["error"]["details"], body
    assert await _query(ctl, "QueryVmInstance") == []
    assert image["uuid"] in json.dumps(body["error"]), body
    left = h1.run("sh", "-c", f"find {PS_URL}/imagecache -type f 2>/dev/null; "
                  "virsh -c qemu:///system list --all --name").stdout.split()
    assert left == [], f"left on {h1.name}: {left}"
