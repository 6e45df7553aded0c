"""Image deletion policies against real SFTP backup storage (an in-process asyncssh server on loopback serving
SFTP and running ``qemu-img info`` with the local shell: tests/sftp_server.py) and real
in-process agents that fetch images over SFTP: Delay per backup storage and recover (a VM is created from the
recovered image), expunge (files, refs, rows, tags, capacity), Direct, legacy images without refs, the expunge
task on time, and 1.0's errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import test_controller_compute as tcc
from sftp_server import sftp_servers
from test_controller_compute import Env

from zsutil.runner import run

env = tcc.env  # a controller, two connected in-process agents, a local PS and a legacy file:// image
PASSWORD = "s3cret pw"
HOSTS = ("127.0.0.1", "127.0.0.2")


@pytest.fixture
async def sftp() -> AsyncIterator[list[tuple[str, int]]]:
    """Two SFTP servers (two backup storage hosts), one per loopback address."""
    async with sftp_servers(HOSTS, PASSWORD) as servers:
        yield servers


async def _bs(e: Env, host: str, port: int, url: Path) -> dict[str, Any]:
    return await e.inv("AddSftpBackupStorage", hostname=host, sshPort=port, username="root", password=PASSWORD,
                       url=str(url), name=f"bs-{host}")


async def _image(e: Env, tmp: Path, bs_uuids: list[str], name: str = "img") -> dict[str, Any]:
    src = tmp / f"{name}.qcow2"
    await run(["qemu-img", "create", "-f", "qcow2", str(src), "64M"], timeout=30)
    await run(["qemu-io", "-c", "write -P 0x5a 0 16M", str(src)], timeout=60)
    return await e.inv("AddImage", name=name, url=f"file://{src}", format="qcow2", backupStorageUuids=bs_uuids)


async def _setup(e: Env, tmp: Path, sftp: list[tuple[str, int]], n: int = 2) -> tuple[list[str], dict[str, Any]]:
    bss = [(await _bs(e, h, p, tmp / f"bs{i}"))["uuid"] for i, (h, p) in enumerate(sftp[:n])]
    return bss, await _image(e, tmp, bss)


def _files(tmp: Path, img: dict[str, Any], n: int = 2) -> list[Path]:
    return [tmp / f"bs{i}" / "images" / img["uuid"] / f"{img['uuid']}.qcow2" for i in range(n)]


async def _img(e: Env, uuid: str) -> dict[str, Any] | None:
    rows = (await e.call("QueryImage", conditions=[{"name": "uuid", "op": "=", "value": uuid}]))["inventories"]
    return rows[0] if rows else None


def _ref_status(img: dict[str, Any]) -> dict[str, str]:
    return {r["backupStorageUuid"]: r["status"] for r in img["backupStorageRefs"]}


async def _vm_from(e: Env, image_uuid: str, name: str) -> tuple[int, dict[str, Any]]:
    return await e.raw("CreateVmInstance", name=name, instanceOfferingUuid=e.ids["offering"], imageUuid=image_uuid,
                       l3NetworkUuids=[e.ids["l3"]])


async def _error(e: Env, api_name: str, status: int, code: str, words: str, **params: Any) -> None:
    st, body = await e.raw(api_name, **params)
    assert st == status and body["error"]["code"] == code and words in body["error"]["details"], body


async def test_delay_per_storage_recover_and_create_vm(env: Env, sftp: list[tuple[str, int]],
                                                       tmp_path: Path) -> None:
    e = env
    (bs1, bs2), img = await _setup(e, tmp_path, sftp)
    await e.call("DeleteImage", uuid=img["uuid"], backupStorageUuids=[bs1])
    got = await _img(e, img["uuid"])
    assert got is not None and got["status"] == "Ready" and _ref_status(got) == {bs1: "Deleted", bs2: "Ready"}
    await e.call("DeleteImage", uuid=img["uuid"])
    got = await _img(e, img["uuid"])
    assert got is not None and got["status"] == "Deleted" and set(_ref_status(got).values()) == {"Deleted"}
    assert all(f.is_file() for f in _files(tmp_path, img))  # bits kept
    status, body = await _vm_from(e, img["uuid"], "from-deleted")
    assert status == 409 and body["error"]["code"] == "SYS.1006" and "is Deleted" in body["error"]["details"], body
    assert await e.core.db.fetchone("SELECT 1 FROM VmInstance WHERE imageUuid=?", (img["uuid"],)) is None
    rec = await e.inv("RecoverImage", imageUuid=img["uuid"], backupStorageUuids=[bs1])
    assert rec["status"] == "Ready" and _ref_status(rec) == {bs1: "Ready", bs2: "Deleted"}
    await _error(e, "RecoverImage", 409, "SYS.1006", "not Deleted", imageUuid=img["uuid"], backupStorageUuids=[bs1])
    await _error(e, "RecoverImage", 400, "SYS.1007", e.ids["zone"], imageUuid=img["uuid"],
                 backupStorageUuids=[e.ids["zone"]])
    rec = await e.inv("RecoverImage", imageUuid=img["uuid"])
    assert _ref_status(rec) == {bs1: "Ready", bs2: "Ready"}
    await _error(e, "RecoverImage", 409, "SYS.1006", "not deleted", imageUuid=img["uuid"])
    await _error(e, "ExpungeImage", 409, "SYS.1006", "not deleted", imageUuid=img["uuid"])
    status, body = await _vm_from(e, img["uuid"], "from-recovered")
    assert status == 200 and body["inventory"]["state"] == "Running", body


async def test_expunge_removes_files_refs_rows_tags(env: Env, sftp: list[tuple[str, int]], tmp_path: Path) -> None:
    e = env
    _, img = await _setup(e, tmp_path, sftp, n=1)
    await e.call("CreateUserTag", resourceType="ImageVO", resourceUuid=img["uuid"], tag="owner::bob")
    await e.call("DeleteImage", uuid=img["uuid"])
    held = (await e.call("QueryBackupStorage", conditions=[]))["inventories"][0]["availableCapacity"]
    await e.call("ExpungeImage", imageUuid=img["uuid"])
    assert not _files(tmp_path, img, 1)[0].parent.exists() and await _img(e, img["uuid"]) is None
    for table, col in (("ImageBackupStorageRef", "imageUuid"), ("UserTag", "resourceUuid")):
        assert await e.core.db.fetchone(f"SELECT 1 FROM {table} WHERE {col}=?", (img["uuid"],)) is None
    freed = (await e.call("QueryBackupStorage", conditions=[]))["inventories"][0]["availableCapacity"] - held
    assert freed >= 8 << 20, f"capacity not returned: {freed} bytes freed for a 16 MiB image"
    await _error(e, "RecoverImage", 404, "SYS.1003", "not found", imageUuid=img["uuid"])
    await _error(e, "ExpungeImage", 404, "SYS.1003", "not found", imageUuid=img["uuid"])
    await e.call("DeleteImage", uuid=img["uuid"])  # unknown uuid: success (1.0)


async def test_direct_policy(env: Env, sftp: list[tuple[str, int]], tmp_path: Path) -> None:
    e = env
    await e.call("UpdateGlobalConfig", category="image", name="deletionPolicy", value="Direct")
    (bs1, bs2), img = await _setup(e, tmp_path, sftp)
    f1, f2 = _files(tmp_path, img)
    await e.call("DeleteImage", uuid=img["uuid"], backupStorageUuids=[bs1])
    got = await _img(e, img["uuid"])
    assert not f1.exists() and f2.is_file() and got is not None and _ref_status(got) == {bs2: "Ready"}
    await e.call("DeleteImage", uuid=img["uuid"])
    assert not f2.exists() and await _img(e, img["uuid"]) is None


async def test_legacy_image_without_refs(env: Env, sftp: list[tuple[str, int]], tmp_path: Path) -> None:
    e = env
    bs = await _bs(e, *sftp[0], tmp_path / "bs0")
    legacy = e.ids["image"]
    await e.call("DeleteImage", uuid=legacy)
    assert (await _img(e, legacy) or {}).get("status") == "Deleted"
    status, body = await e.create_vm("from-deleted")
    assert status == 409 and body["error"]["code"] == "SYS.1006" and "is Deleted" in body["error"]["details"], body
    await _error(e, "RecoverImage", 400, "SYS.1007", bs["uuid"], imageUuid=legacy, backupStorageUuids=[bs["uuid"]])
    assert (await e.inv("RecoverImage", imageUuid=legacy))["status"] == "Ready"
    status, body = await e.create_vm("from-recovered")
    assert status == 200, body
    await e.call("DestroyVmInstance", uuid=body["inventory"]["uuid"])
    await e.call("ExpungeVmInstance", uuid=body["inventory"]["uuid"])
    await e.call("DeleteImage", uuid=legacy)
    await e.call("ExpungeImage", imageUuid=legacy)
    assert await _img(e, legacy) is None


async def test_expunge_task_on_time_and_never_policy(env: Env, sftp: list[tuple[str, int]],
                                                     tmp_path: Path) -> None:
    e = env
    await e.call("UpdateGlobalConfig", category="image", name="expungePeriod", value="2")
    await e.call("UpdateGlobalConfig", category="image", name="expungeInterval", value="1")
    (bs1,), delayed = await _setup(e, tmp_path, sftp, n=1)
    await e.call("DeleteImage", uuid=delayed["uuid"])
    await asyncio.sleep(1.0)
    assert (await _img(e, delayed["uuid"]) or {}).get("status") == "Deleted"  # not before expungePeriod
    for _ in range(50):
        if await _img(e, delayed["uuid"]) is None:
            break
        await asyncio.sleep(0.2)
    assert await _img(e, delayed["uuid"]) is None, "a Delay image was not expunged within expungePeriod + margin"
    assert not _files(tmp_path, delayed, 1)[0].exists()
    await e.call("UpdateGlobalConfig", category="image", name="deletionPolicy", value="Never")
    kept = await _image(e, tmp_path, [bs1], name="kept")
    await e.call("DeleteImage", uuid=kept["uuid"])
    await e.call("DeleteImage", uuid=e.ids["image"])  # a legacy image is kept as well
    await asyncio.sleep(4.0)
    assert (await _img(e, kept["uuid"]) or {}).get("status") == "Deleted"
    assert (await _img(e, e.ids["image"]) or {}).get("status") == "Deleted"
    assert _files(tmp_path, kept, 1)[0].is_file()
    assert (await e.inv("RecoverImage", imageUuid=kept["uuid"]))["status"] == "Ready"
