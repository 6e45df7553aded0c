"""Clusters, primary/backup storage records and offerings through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sftp_server import sftp_servers
from test_api_support import cluster, refused, zone

GiB = 1 << 30


async def test_cluster_lifecycle(api: Any) -> None:
    z = await zone(api)
    c = await cluster(api, z["uuid"])
    assert set(c) == {"uuid", "name", "description", "state", "hypervisorType", "zoneUuid", "type", "createDate",
                      "lastOpDate"}
    assert (c["state"], c["hypervisorType"], c["zoneUuid"], c["type"]) == ("Enabled", "KVM", z["uuid"], "zstack")
    c = (await api.call("UpdateCluster", uuid=c["uuid"], description="rack 1"))["inventory"]
    assert (c["name"], c["description"]) == ("cluster1", "rack 1")
    c = (await api.call("ChangeClusterState", uuid=c["uuid"], stateEvent="disable"))["inventory"]
    assert c["state"] == "Disabled"
    await refused(api, "CreateCluster", 400, "SYS.1007", "hypervisorType", "KVM", "Xen", zoneUuid=z["uuid"],
                  name="x", hypervisorType="Xen")
    await refused(api, "CreateCluster", 400, "SYS.1007", "field[hypervisorType]", "mandatory", zoneUuid=z["uuid"],
                  name="x")
    await refused(api, "CreateCluster", 404, "SYS.1003", "invalid field[zoneUuid]", zoneUuid="1" * 32, name="x",
                  hypervisorType="KVM")
    await refused(api, "UpdateCluster", 404, "SYS.1003", "1" * 32, uuid="1" * 32, name="y")
    await api.call("DeleteCluster", uuid=c["uuid"], deleteMode="Enforcing")
    assert await api.query("QueryCluster") == []


async def test_local_primary_storage(api: Any) -> None:
    z = await zone(api)
    c1, c2 = await cluster(api, z["uuid"]), await cluster(api, z["uuid"], "c2")
    ps = (await api.call("AddLocalPrimaryStorage", zoneUuid=z["uuid"], name="ls", url="/zstack_ps"))["inventory"]
    assert (ps["type"], ps["url"], ps["mountPath"], ps["state"], ps["status"]) == (
        "LocalStorage", "/zstack_ps", "/zstack_ps", "Enabled", "Connected")
    assert ps["attachedClusterUuids"] == [] and ps["totalCapacity"] == 0
    await refused(api, "AddLocalPrimaryStorage", 400, "SYS.1007", "url[zstack_ps]", zoneUuid=z["uuid"], name="x",
                  url="zstack_ps")
    args = {"primaryStorageUuid": ps["uuid"], "clusterUuid": c1["uuid"]}
    ps = (await api.call("AttachPrimaryStorageToCluster", **args))["inventory"]
    assert ps["attachedClusterUuids"] == [c1["uuid"]]
    await refused(api, "AttachPrimaryStorageToCluster", 400, "SYS.1007", "has been attached", **args)
    ps2 = (await api.call("AddLocalPrimaryStorage", zoneUuid=z["uuid"], name="ls2", url="/b"))["inventory"]
    await refused(api, "AttachPrimaryStorageToCluster", 400, "SYS.1007", "only one LocalStorage",
                  primaryStorageUuid=ps2["uuid"], clusterUuid=c1["uuid"])
    await api.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ps2["uuid"], clusterUuid=c2["uuid"])
    z2 = await zone(api, "z2")
    c3 = await cluster(api, z2["uuid"], "c3")
    await refused(api, "AttachPrimaryStorageToCluster", 400, "SYS.1007", "same zone",
                  primaryStorageUuid=ps["uuid"], clusterUuid=c3["uuid"])
    await refused(api, "DeletePrimaryStorage", 409, "SYS.1006", "attached", c1["uuid"], uuid=ps["uuid"])
    ps = (await api.call("ChangePrimaryStorageState", uuid=ps["uuid"], stateEvent="maintain"))["inventory"]
    assert ps["state"] == "Maintenance"
    await refused(api, "ChangePrimaryStorageState", 400, "SYS.1007", "stateEvent", uuid=ps["uuid"],
                  stateEvent="deleting")
    ps = (await api.call("UpdatePrimaryStorage", uuid=ps["uuid"], name="ls-renamed"))["inventory"]
    assert ps["name"] == "ls-renamed"
    ps = (await api.call("DetachPrimaryStorageFromCluster", **args))["inventory"]
    assert ps["attachedClusterUuids"] == []
    await refused(api, "DetachPrimaryStorageFromCluster", 400, "SYS.1007", "not attached", **args)
    await api.call("DeletePrimaryStorage", uuid=ps["uuid"])
    await api.call("DeletePrimaryStorage", uuid=ps2["uuid"], deleteMode="Enforcing")
    assert await api.query("QueryPrimaryStorage") == []


@pytest.fixture
async def sftp_port() -> AsyncIterator[int]:
    """An in-process SFTP server on loopback, exec off (no host command: the unit tier allows it)."""
    async with sftp_servers(["127.0.0.1"], "secret", exec_commands=False) as [(_, port)]:
        yield port


async def test_sftp_backup_storage(api: Any, sftp_port: int, tmp_path: Path) -> None:
    z = await zone(api)
    params = {"hostname": "127.0.0.1", "username": "root", "password": "secret", "url": str(tmp_path / "bs"),
              "name": "bs", "sshPort": sftp_port}
    await refused(api, "AddSftpBackupStorage", 409, "SYS.1006", "wrong username or password",
                  **{**params, "password": "bad"})
    bs = (await api.call("AddSftpBackupStorage", **params))["inventory"]
    assert "password" not in bs and "username" not in bs
    assert (bs["hostname"], bs["type"], bs["status"], bs["state"], bs["sshPort"]) == (
        "127.0.0.1", "SftpBackupStorage", "Connected", "Enabled", sftp_port)
    assert bs["totalCapacity"] >= bs["availableCapacity"] > 0 and (tmp_path / "bs").is_dir()
    assert "secret" not in str(await api.call("QueryBackupStorage", conditions=[]))
    await refused(api, "AddSftpBackupStorage", 400, "SYS.1007", "127.0.0.1", "existing", **params)
    await refused(api, "AddSftpBackupStorage", 400, "SYS.1007", "hostname", **{**params, "hostname": "bad host"})
    await refused(api, "AddSftpBackupStorage", 400, "SYS.1007", "sshPort", **{**params, "hostname": "h2",
                                                                                 "sshPort": 70000})
    await refused(api, "AddSftpBackupStorage", 400, "SYS.1007", "field[password]", "mandatory",
                  **{k: v for k, v in params.items() if k != "password"})
    args = {"backupStorageUuid": bs["uuid"], "zoneUuid": z["uuid"]}
    bs = (await api.call("AttachBackupStorageToZone", **args))["inventory"]
    assert bs["attachedZoneUuids"] == [z["uuid"]]
    await refused(api, "AttachBackupStorageToZone", 400, "SYS.1007", "has been attached", **args)
    bs = (await api.call("ChangeBackupStorageState", uuid=bs["uuid"], stateEvent="disable"))["inventory"]
    assert bs["state"] == "Disabled"
    bs = (await api.call("UpdateBackupStorage", uuid=bs["uuid"], description="d"))["inventory"]
    assert bs["description"] == "d"
    bs = (await api.call("DetachBackupStorageFromZone", **args))["inventory"]
    assert bs["attachedZoneUuids"] == []
    await refused(api, "DetachBackupStorageFromZone", 400, "SYS.1007", "not attached", **args)
    await api.call("DeleteBackupStorage", uuid=bs["uuid"])
    assert await api.query("QuerySftpBackupStorage") == []


async def test_offerings(api: Any) -> None:
    io = (await api.call("CreateInstanceOffering", name="small", cpuNum=1, cpuSpeed=1000,
                         memorySize=GiB))["inventory"]
    assert set(io) == {"uuid", "name", "description", "cpuNum", "cpuSpeed", "memorySize", "type",
                       "allocatorStrategy", "sortKey", "state", "createDate", "lastOpDate"}
    assert (io["memorySize"], io["type"], io["state"], io["sortKey"]) == (GiB, "UserVm", "Enabled", 0)
    do = (await api.call("CreateDiskOffering", name="d", diskSize="10737418240"))["inventory"]
    assert do["diskSize"] == 10 * GiB and do["allocatorStrategy"] == "DefaultPrimaryStorageAllocationStrategy"
    for field, value in (("cpuNum", 0), ("cpuSpeed", -1), ("memorySize", "lots")):
        await refused(api, "CreateInstanceOffering", 400, "SYS.1007", f"field[{field}]",
                      **{"name": "x", "cpuNum": 1, "cpuSpeed": 1, "memorySize": 1, field: value})
    await refused(api, "CreateInstanceOffering", 400, "SYS.1007", "allocatorStrategy", name="x", cpuNum=1,
                  cpuSpeed=1, memorySize=1, allocatorStrategy="Nope")
    await refused(api, "CreateDiskOffering", 400, "SYS.1007", "field[diskSize]", "mandatory", name="x")
    await refused(api, "CreateDiskOffering", 400, "SYS.1007", "field[diskSize]", name="x", diskSize=0)
    io = (await api.call("ChangeInstanceOfferingState", uuid=io["uuid"], stateEvent="disable"))["inventory"]
    assert io["state"] == "Disabled"
    do = (await api.call("UpdateDiskOffering", uuid=do["uuid"], name="big"))["inventory"]
    assert do["name"] == "big"
    await api.call("DeleteInstanceOffering", uuid=io["uuid"])
    await api.call("DeleteDiskOffering", uuid=do["uuid"])
    await api.call("DeleteDiskOffering", uuid=do["uuid"])  # unknown: success (1.0)
    assert await api.query("QueryInstanceOffering") == [] and await api.query("QueryDiskOffering") == []
