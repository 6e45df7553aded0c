"""Inventories: 1.0 field names (reference §2), embedded children, hidden columns, booleans, scalar lists."""

from __future__ import annotations

import aiosqlite
import pytest
from test_query_support import NOW, db, insert, migrated_template, seed_vms

from controller.query import QueryMsg, get_inventories, get_inventory, query
from controller.query import inventory as inventory_mod

__all__ = ["db", "migrated_template"]

COMMON = {"createDate", "lastOpDate"}
# Field lists of reference §2, plus `description` for named resources.
VM_FIELDS = COMMON | {
    "uuid",
    "name",
    "description",
    "zoneUuid",
    "clusterUuid",
    "imageUuid",
    "hostUuid",
    "lastHostUuid",
    "instanceOfferingUuid",
    "rootVolumeUuid",
    "platform",
    "defaultL3NetworkUuid",
    "type",
    "hypervisorType",
    "memorySize",
    "cpuNum",
    "cpuSpeed",
    "allocatorStrategy",
    "state",
    "internalId",
    "vmNics",
    "allVolumes",
}
NIC_FIELDS = COMMON | {
    "uuid",
    "vmInstanceUuid",
    "usedIpUuid",
    "l3NetworkUuid",
    "ip",
    "mac",
    "netmask",
    "gateway",
    "metaData",
    "internalName",
    "deviceId",
}
VOLUME_FIELDS = COMMON | {
    "uuid",
    "name",
    "description",
    "primaryStorageUuid",
    "vmInstanceUuid",
    "diskOfferingUuid",
    "rootImageUuid",
    "installPath",
    "type",
    "format",
    "size",
    "deviceId",
    "state",
    "status",
}
L3_FIELDS = COMMON | {
    "uuid",
    "name",
    "description",
    "type",
    "zoneUuid",
    "l2NetworkUuid",
    "state",
    "dnsDomain",
    "system",
    "dns",
    "ipRanges",
    "networkServices",
}
IPRANGE_FIELDS = COMMON | {
    "uuid",
    "l3NetworkUuid",
    "name",
    "description",
    "startIp",
    "endIp",
    "netmask",
    "gateway",
    "networkCidr",
}
HOST_FIELDS = COMMON | {
    "uuid",
    "name",
    "description",
    "zoneUuid",
    "clusterUuid",
    "managementIp",
    "hypervisorType",
    "state",
    "status",
    "totalCpuCapacity",
    "availableCpuCapacity",
    "totalMemoryCapacity",
    "availableMemoryCapacity",
    "username",
}
NSP_FIELDS = COMMON | {"uuid", "name", "description", "type", "networkServiceTypes", "attachedL2NetworkUuids"}
NSL3_FIELDS = {"l3NetworkUuid", "networkServiceProviderUuid", "networkServiceType"}
SYSTEM_TAG_FIELDS = COMMON | {"uuid", "resourceUuid", "resourceType", "tag", "type", "inherent"}


@pytest.fixture
async def vms(db: aiosqlite.Connection) -> aiosqlite.Connection:
    await seed_vms(db)
    return db


async def test_vm_inventory(vms: aiosqlite.Connection) -> None:
    vm = await get_inventory(vms, "VmInstance", "vm1")
    assert vm is not None and set(vm) == VM_FIELDS
    assert (vm["name"], vm["state"], vm["cpuNum"], vm["memorySize"], vm["hostUuid"]) == (
        "web1",
        "Running",
        1,
        1024,
        "h1",
    )
    assert [n["uuid"] for n in vm["vmNics"]] == ["n1", "n2"]
    assert all(set(n) == NIC_FIELDS for n in vm["vmNics"])
    assert vm["vmNics"][1]["ip"] == "192.168.0.10" and vm["vmNics"][1]["deviceId"] == 1
    assert [v["uuid"] for v in vm["allVolumes"]] == ["vol-vm1"]
    assert set(vm["allVolumes"][0]) - {"actualSize"} == VOLUME_FIELDS
    vm4 = await get_inventory(vms, "VmInstance", "vm4")
    assert vm4 is not None and vm4["vmNics"] == [] and vm4["hostUuid"] is None


async def test_l3_inventory_nested_children(vms: aiosqlite.Connection) -> None:
    l3 = await get_inventory(vms, "L3Network", "l3a")
    assert l3 is not None and set(l3) == L3_FIELDS
    assert l3["system"] is False and l3["dns"] == ["1.1.1.1", "8.8.8.8"]  # ordered by position
    assert [set(r) for r in l3["ipRanges"]] == [IPRANGE_FIELDS]  # startInt/endInt hidden
    assert l3["ipRanges"][0]["networkCidr"] == "10.0.0.0/24"
    assert l3["networkServices"] == [
        {"l3NetworkUuid": "l3a", "networkServiceProviderUuid": "nsp1", "networkServiceType": "DHCP"},
        {"l3NetworkUuid": "l3a", "networkServiceProviderUuid": "nsp1", "networkServiceType": "Userdata"},
    ]
    l3b = await get_inventory(vms, "L3Network", "l3b")
    assert l3b is not None and l3b["system"] is True and l3b["dns"] == [] and l3b["ipRanges"] == []


async def test_host_inventory_hides_secrets(vms: aiosqlite.Connection) -> None:
    host = await get_inventory(vms, "Host", "h1")
    assert host is not None
    assert HOST_FIELDS <= set(host) and set(host) - HOST_FIELDS == {"cpuNum", "sshPort", "sshHostKeyFingerprint",
                                                                 "agentVersion", "agentProtocol", "agentDigest",
                                                                 "agentUpgradeNeeded"}
    assert not {"password", "agentToken", "agentBootId", "sshHostKey"} & set(host)
    assert host["username"] == "root" and host["availableCpuCapacity"] == 4000


async def test_network_service_inventories(vms: aiosqlite.Connection) -> None:
    nsp = await get_inventory(vms, "NetworkServiceProvider", "nsp1")
    assert nsp is not None and set(nsp) == NSP_FIELDS
    assert nsp["networkServiceTypes"] == ["DHCP", "Userdata"] and nsp["attachedL2NetworkUuids"] == ["l2"]
    refs = (await query(vms, "NetworkServiceL3NetworkRef", QueryMsg(conditions=[])))["inventories"]
    assert [set(r) for r in refs] == [NSL3_FIELDS, NSL3_FIELDS]
    ref = await get_inventory(vms, "NetworkServiceL3NetworkRef", ("l3a", "Userdata"))
    assert ref == {
        "l3NetworkUuid": "l3a",
        "networkServiceProviderUuid": "nsp1",
        "networkServiceType": "Userdata",
    }


async def test_tag_inventories(vms: aiosqlite.Connection) -> None:
    tag = await get_inventory(vms, "SystemTag", "t1")
    assert tag == {
        "uuid": "t1",
        "resourceUuid": "vm1",
        "resourceType": "VmInstanceVO",
        "tag": "hostname::web1",
        "type": "System",
        "inherent": False,
        "createDate": NOW,
        "lastOpDate": NOW,
    }
    assert set(tag) == SYSTEM_TAG_FIELDS
    user = await get_inventory(vms, "Tag", "t3")
    assert user is not None and user["type"] == "User" and "inherent" not in user


async def test_l2_subtypes(vms: aiosqlite.Connection) -> None:
    l2v = await get_inventory(vms, "L2VlanNetwork", "l2v")
    assert l2v is not None and l2v["vlan"] == 10 and l2v["attachedClusterUuids"] == []
    assert await get_inventory(vms, "L2VlanNetwork", "l2") is None  # a NoVlan network is not a VLAN one
    l2 = await get_inventory(vms, "L2Network", "l2")
    assert l2 is not None and "vlan" not in l2 and l2["attachedClusterUuids"] == ["c1"]


async def test_storage_and_image_inventories(vms: aiosqlite.Connection) -> None:
    await insert(vms, "PrimaryStorage", uuid="ps1", name="local", zoneUuid="z1", url="/zs", type="LocalStorage")
    await insert(vms, "PrimaryStorageClusterRef", primaryStorageUuid="ps1", clusterUuid="c1")
    await insert(vms, "LocalStorageHostRef", primaryStorageUuid="ps1", hostUuid="h2", totalCapacity=100)
    await insert(
        vms,
        "BackupStorage",
        uuid="bs1",
        name="sftp",
        url="/bs",
        type="SftpBackupStorage",
        hostname="172.20.0.9",
        username="root",
        password="pw",
    )
    await insert(vms, "Image", uuid="img1", name="ttylinux", format="qcow2", system=1, url="http://x/i.qcow2")
    await insert(
        vms,
        "ImageBackupStorageRef",
        imageUuid="img1",
        backupStorageUuid="bs1",
        installPath="/bs/i",
        status="Ready",
    )
    await insert(vms, "VolumeSnapshot", uuid="sn1", name="s", volumeUuid="vol-vm1", latest=1)
    ps = await get_inventory(vms, "PrimaryStorage", "ps1")
    assert ps is not None and ps["attachedClusterUuids"] == ["c1"]
    hostref = await get_inventory(vms, "LocalStorageHostRef", ("ps1", "h2"))
    assert hostref is not None and hostref["uuid"] == "ps1" and hostref["totalCapacity"] == 100
    bs = await get_inventory(vms, "SftpBackupStorage", "bs1")
    assert bs is not None and bs["hostname"] == "172.20.0.9" and not {"username", "password"} & set(bs)
    image = await get_inventory(vms, "Image", "img1")
    assert image is not None and image["system"] is True
    assert [(r["id"], r["backupStorageUuid"], r["status"]) for r in image["backupStorageRefs"]] == [(1, "bs1", "Ready")]
    snap = await get_inventory(vms, "VolumeSnapshot", "sn1")
    assert snap is not None and snap["latest"] is True and snap["backupStorageRefs"] == []


async def test_global_config_composite_key(db: aiosqlite.Connection) -> None:
    await insert(db, "GlobalConfig", category="identity", name="session.timeout", value="7200", defaultValue="7200")
    inv = await get_inventory(db, "GlobalConfig", ("identity", "session.timeout"))
    assert inv == {
        "category": "identity",
        "name": "session.timeout",
        "value": "7200",
        "defaultValue": "7200",
        "description": None,
    }
    assert await get_inventory(db, "GlobalConfig", ("identity", "nope")) is None
    got = await get_inventories(db, "GlobalConfig", [("identity", "nope"), ("identity", "session.timeout")])
    assert [g["name"] for g in got] == ["session.timeout"]


async def test_get_inventories_keeps_order_and_skips_missing(vms: aiosqlite.Connection) -> None:
    got = await get_inventories(vms, "VmInstance", ["vm3", "missing", "vm1", "vm3"])
    assert [g["uuid"] for g in got] == ["vm3", "vm1"]
    assert got[0]["vmNics"][0]["uuid"] == "n4"
    assert await get_inventories(vms, "VmInstance", []) == []


async def test_page_costs_one_query_per_child_relation_chunk(db: aiosqlite.Connection) -> None:
    """1200 VMs with a NIC each: 1 page query + 2 relations × 3 chunks of 500 keys, never one per row."""
    await insert(db, "Zone", uuid="z1", name="zone1")
    vms = [(f"v{i:05d}", f"vm{i}", i, NOW, NOW) for i in range(1200)]
    await db.executemany(
        "INSERT INTO VmInstance (uuid, name, internalId, memorySize, cpuNum, cpuSpeed, "
        "createDate, lastOpDate) VALUES (?, ?, ?, 1, 1, 1, ?, ?)",
        vms,
    )
    await db.executemany(
        "INSERT INTO VmNic (uuid, vmInstanceUuid, mac, internalName, deviceId, createDate, "
        "lastOpDate) VALUES (?, ?, ?, 'vnic', 0, ?, ?)",
        [(f"n{u}", u, f"mac-{u}", NOW, NOW) for u, *_ in vms],
    )
    statements: list[str] = []
    await db.set_trace_callback(statements.append)
    reply = await query(db, "VmInstance", QueryMsg(conditions=[], limit=1200))
    await db.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reply["inventories"]) == 1200
    assert all(inv["vmNics"][0]["uuid"] == f"n{inv['uuid']}" for inv in reply["inventories"])
    assert len(selects) == 1 + 2 * 3 and inventory_mod.CHUNK == 500
