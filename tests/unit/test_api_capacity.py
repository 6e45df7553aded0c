"""Capacity helpers and type lists (1.0 dashboard and create dialogs) against hand-computed figures.

Hosts, storages and used IPs are rows written straight into the database with chosen capacities (the
capacity figures of connected hosts come from their agents; the contract tier checks those), so every
expected figure below is computed by hand from the numbers in this file."""

from __future__ import annotations

from typing import Any

from test_api_support import _core, cluster, ip_range, l2, l3, refused, zone

from controller.util import new_uuid, now_iso

GiB = 1 << 30
MiB = 1 << 20


async def _host(api: Any, z: str, c: str, ip: str, cpu: tuple[int, int], mem: tuple[int, int],
                state: str = "Enabled", status: str = "Connected") -> str:
    uuid, now = new_uuid(), now_iso()
    async with _core(api).db.write() as tx:
        await tx.insert("Host", {"uuid": uuid, "name": ip, "zoneUuid": z, "clusterUuid": c, "managementIp": ip,
                                 "state": state, "status": status, "totalCpuCapacity": cpu[0],
                                 "availableCpuCapacity": cpu[1], "totalMemoryCapacity": mem[0],
                                 "availableMemoryCapacity": mem[1], "createDate": now, "lastOpDate": now})
    return uuid


async def _ps(api: Any, z: str, name: str, clusters: list[str], total: int, avail: int) -> str:
    ps = (await api.call("AddLocalPrimaryStorage", zoneUuid=z, name=name, url=f"/{name}"))["inventory"]
    for c in clusters:
        await api.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=c)
    async with _core(api).db.write() as tx:
        await tx.execute("UPDATE PrimaryStorage SET totalCapacity=?, availableCapacity=?, totalPhysicalCapacity=?, "
                         "availablePhysicalCapacity=? WHERE uuid=?", (total, avail, total * 2, avail * 2, ps["uuid"]))
    return str(ps["uuid"])


async def _bs(api: Any, zones: list[str], total: int, avail: int) -> str:
    uuid, now = new_uuid(), now_iso()
    async with _core(api).db.write() as tx:
        await tx.insert("BackupStorage", {"uuid": uuid, "name": "bs", "url": "/bs", "type": "SftpBackupStorage",
                                          "totalCapacity": total, "availableCapacity": avail, "createDate": now,
                                          "lastOpDate": now})
        for z in zones:
            await tx.insert("BackupStorageZoneRef", {"backupStorageUuid": uuid, "zoneUuid": z, "createDate": now})
    return uuid


async def test_cpu_memory_capacity_by_zone_cluster_host_and_all(api: Any) -> None:
    z1, z2 = (await zone(api, "z1"))["uuid"], (await zone(api, "z2"))["uuid"]
    c1, c2 = (await cluster(api, z1, "c1"))["uuid"], (await cluster(api, z1, "c2"))["uuid"]
    c3 = (await cluster(api, z2, "c3"))["uuid"]
    h1 = await _host(api, z1, c1, "10.0.0.1", (8000, 6000), (16 * GiB, 10 * GiB))
    h2 = await _host(api, z1, c1, "10.0.0.2", (4000, 4000), (8 * GiB, 7 * GiB))
    h3 = await _host(api, z1, c2, "10.0.0.3", (16000, 1000), (32 * GiB, 1 * GiB))
    h4 = await _host(api, z2, c3, "10.0.0.4", (2000, 500), (4 * GiB, 3 * GiB))
    # not counted (1.0: only Enabled and Connected hosts)
    await _host(api, z1, c1, "10.0.0.5", (9999, 9999), (GiB, GiB), state="Disabled")
    h6 = await _host(api, z2, c3, "10.0.0.6", (7777, 7777), (GiB, GiB), status="Disconnected")

    async def cap(**kw: Any) -> tuple[int, int, int, int]:
        r = await api.call("GetCpuMemoryCapacity", **kw)
        return r["totalCpu"], r["availableCpu"], r["totalMemory"], r["availableMemory"]

    assert await cap(all=True) == (30000, 11500, 60 * GiB, 21 * GiB)
    assert await cap(zoneUuids=[z1]) == (28000, 11000, 56 * GiB, 18 * GiB)
    assert await cap(zoneUuids=[z2]) == (2000, 500, 4 * GiB, 3 * GiB)
    assert await cap(clusterUuids=[c1]) == (12000, 10000, 24 * GiB, 17 * GiB)
    assert await cap(clusterUuids=[c1, c3, c1]) == (14000, 10500, 28 * GiB, 20 * GiB)
    assert await cap(hostUuids=[h1, h3]) == (24000, 7000, 48 * GiB, 11 * GiB)
    assert await cap(hostUuids=[h6]) == (0, 0, 0, 0)
    # the most specific list wins; all=true ignores the lists
    assert await cap(zoneUuids=[z2], clusterUuids=[c2], hostUuids=[h2]) == (4000, 4000, 8 * GiB, 7 * GiB)
    assert await cap(zoneUuids=[z1], clusterUuids=[c3]) == (2000, 500, 4 * GiB, 3 * GiB)
    assert await cap(all=True, hostUuids=[h4]) == (30000, 11500, 60 * GiB, 21 * GiB)
    await refused(api, "GetCpuMemoryCapacity", 400, "SYS.1007", "hostUuids, clusterUuids, zoneUuids",
                  "or all is set to true")
    await refused(api, "GetCpuMemoryCapacity", 400, "SYS.1007", "hostUuids, clusterUuids, zoneUuids",
                  hostUuids=[], zoneUuids=[])
    missing = "a" * 32
    await refused(api, "GetCpuMemoryCapacity", 404, "SYS.1003", "invalid field[clusterUuids]", missing, "ClusterVO",
                  clusterUuids=[c1, missing])
    await refused(api, "GetCpuMemoryCapacity", 400, "SYS.1007", "zoneUuids", zoneUuids=["not-a-uuid"])


async def test_primary_and_backup_storage_capacity(api: Any) -> None:
    z1, z2 = (await zone(api, "z1"))["uuid"], (await zone(api, "z2"))["uuid"]
    c1, c2 = (await cluster(api, z1, "c1"))["uuid"], (await cluster(api, z1, "c2"))["uuid"]
    c3 = (await cluster(api, z2, "c3"))["uuid"]
    p1 = await _ps(api, z1, "p1", [c1], 100 * GiB, 60 * GiB)
    p2 = await _ps(api, z1, "p2", [c2], 50 * GiB, 5 * GiB)
    await _ps(api, z1, "p3", [], 7 * GiB, 7 * GiB)                  # attached to no cluster
    p4 = await _ps(api, z2, "p4", [c3], 10 * GiB, 1 * GiB)

    async def ps(**kw: Any) -> tuple[int, int, int, int]:
        r = await api.call("GetPrimaryStorageCapacity", **kw)
        return r["totalCapacity"], r["availableCapacity"], r["totalPhysicalCapacity"], r["availablePhysicalCapacity"]

    assert await ps(all=True) == (167 * GiB, 73 * GiB, 334 * GiB, 146 * GiB)
    assert await ps(zoneUuids=[z1]) == (157 * GiB, 72 * GiB, 314 * GiB, 144 * GiB)
    assert await ps(clusterUuids=[c1, c2]) == (150 * GiB, 65 * GiB, 300 * GiB, 130 * GiB)
    assert await ps(clusterUuids=[c3], zoneUuids=[z1]) == (10 * GiB, 1 * GiB, 20 * GiB, 2 * GiB)
    assert await ps(primaryStorageUuids=[p1, p4], clusterUuids=[c2]) == (110 * GiB, 61 * GiB, 220 * GiB, 122 * GiB)
    assert await ps(primaryStorageUuids=[p2]) == (50 * GiB, 5 * GiB, 100 * GiB, 10 * GiB)
    await refused(api, "GetPrimaryStorageCapacity", 400, "SYS.1007",
                  "primaryStorageUuids, clusterUuids, zoneUuids must at least have one be none-empty list")
    await refused(api, "GetPrimaryStorageCapacity", 404, "SYS.1003", "primaryStorageUuids", "PrimaryStorageVO",
                  primaryStorageUuids=["b" * 32])

    b1 = await _bs(api, [z1, z2], 1000 * GiB, 900 * GiB)           # in two zones: counted once
    b2 = await _bs(api, [z1], 200 * GiB, 20 * GiB)
    await _bs(api, [], 3 * GiB, 3 * GiB)

    async def bs(**kw: Any) -> tuple[int, int]:
        r = await api.call("GetBackupStorageCapacity", **kw)
        return r["totalCapacity"], r["availableCapacity"]

    assert await bs(all=True) == (1203 * GiB, 923 * GiB)
    assert await bs(zoneUuids=[z1, z2]) == (1200 * GiB, 920 * GiB)
    assert await bs(zoneUuids=[z2]) == (1000 * GiB, 900 * GiB)
    assert await bs(backupStorageUuids=[b2], zoneUuids=[z2]) == (200 * GiB, 20 * GiB)
    assert await bs(backupStorageUuids=[b1, b2]) == (1200 * GiB, 920 * GiB)
    await refused(api, "GetBackupStorageCapacity", 400, "SYS.1007", "backupStorageUuids, zoneUuids")
    await refused(api, "GetBackupStorageCapacity", 404, "SYS.1003", "zoneUuids", "c" * 32, zoneUuids=["c" * 32])


async def test_ip_address_capacity(api: Any) -> None:
    z1, z2 = (await zone(api, "z1"))["uuid"], (await zone(api, "z2"))["uuid"]
    n1 = await l3(api, (await l2(api, z1))["uuid"], "n1")
    n2 = await l3(api, (await l2(api, z1, "eth1"))["uuid"], "n2")
    n3 = await l3(api, (await l2(api, z2))["uuid"], "n3")
    r1 = await ip_range(api, n1["uuid"], "10.1.0.10", "10.1.0.109", "255.255.0.0", "10.1.0.1", "r1")   # 100
    r2 = await ip_range(api, n1["uuid"], "10.1.1.0", "10.1.1.19", "255.255.0.0", "10.1.0.1", "r2")     # 20
    r3 = await ip_range(api, n2["uuid"], "10.2.0.2", "10.2.0.254", "255.255.255.0", "10.2.0.1", "r3")  # 253
    await ip_range(api, n3["uuid"], "10.3.0.2", "10.3.0.2", "255.255.255.0", "10.3.0.1", "r4")         # 1
    # 3 IPs in use in r1, 2 in r2
    used = {r1["uuid"]: ["10.1.0.10", "10.1.0.11", "10.1.0.109"], r2["uuid"]: ["10.1.1.5", "10.1.1.6"]}
    now = now_iso()
    async with _core(api).db.write() as tx:
        for rng, ips in used.items():
            for ip in ips:
                a, b, c, d = (int(x) for x in ip.split("."))
                await tx.insert("UsedIp", {"uuid": new_uuid(), "ipRangeUuid": rng, "l3NetworkUuid": n1["uuid"],
                                           "ip": ip, "ipInLong": (a << 24) | (b << 16) | (c << 8) | d,
                                           "usedFor": "VmNic", "createDate": now, "lastOpDate": now})

    async def ipc(**kw: Any) -> tuple[int, int]:
        r = await api.call("GetIpAddressCapacity", **kw)
        return r["totalCapacity"], r["availableCapacity"]

    assert await ipc(all=True) == (374, 369)
    assert await ipc(zoneUuids=[z1]) == (373, 368)
    assert await ipc(zoneUuids=[z2]) == (1, 1)
    assert await ipc(l3NetworkUuids=[n1["uuid"]]) == (120, 115)
    assert await ipc(l3NetworkUuids=[n2["uuid"], n3["uuid"]]) == (254, 254)
    assert await ipc(ipRangeUuids=[r2["uuid"]], l3NetworkUuids=[n2["uuid"]]) == (20, 18)
    assert await ipc(ipRangeUuids=[r1["uuid"], r3["uuid"]]) == (353, 350)
    await refused(api, "GetIpAddressCapacity", 400, "SYS.1007", "ipRangeUuids, l3NetworkUuids, zoneUuids")
    await refused(api, "GetIpAddressCapacity", 404, "SYS.1003", "l3NetworkUuids", "L3NetworkVO",
                  l3NetworkUuids=["d" * 32])


async def test_type_lists_and_global_config(api: Any) -> None:
    assert (await api.call("GetHypervisorTypes"))["hypervisorTypes"] == ["KVM", "Simulator"]
    assert (await api.call("GetL2NetworkTypes"))["l2NetworkTypes"] == ["L2NoVlanNetwork", "L2VlanNetwork"]
    assert (await api.call("GetL3NetworkTypes"))["l3NetworkTypes"] == ["L3BasicNetwork"]
    assert (await api.call("GetPrimaryStorageTypes"))["primaryStorageTypes"] == ["LocalStorage", "NFS",
                                                                                   "SharedMountPoint"]
    assert (await api.call("GetBackupStorageTypes"))["backupStorageTypes"] == ["SftpBackupStorage"]
    assert (await api.call("GetHostAllocatorStrategies"))["hostAllocatorStrategies"] == [
        "DefaultHostAllocatorStrategy", "LeastVmPreferredHostAllocatorStrategy", "DesignatedHostAllocatorStrategy"]
    assert (await api.call("GetPrimaryStorageAllocatorStrategies"))["primaryStorageAllocatorStrategies"] == [
        "DefaultPrimaryStorageAllocationStrategy"]
    formats = (await api.call("GetVolumeFormat"))["formats"]
    assert {f["format"]: (f["masterHypervisorType"], f["supportingHypervisorTypes"]) for f in formats} == {
        "qcow2": ("KVM", ["KVM"]), "raw": ("KVM", ["KVM"])}
    # every listed type is accepted by its create API (and nothing else is): the lists come from the models
    await refused(api, "CreateCluster", 400, "SYS.1007", "hypervisorType", zoneUuid="e" * 32, name="x",
                  hypervisorType="Xen")
    inv = (await api.call("GetGlobalConfig", category="identity", name="session.timeout"))["inventory"]
    assert (inv["category"], inv["name"], inv["value"]) == ("identity", "session.timeout", inv["defaultValue"])
    await api.call("UpdateGlobalConfig", category="identity", name="session.timeout", value=7200)
    inv = (await api.call("GetGlobalConfig", category="identity", name="session.timeout"))["inventory"]
    assert inv["value"] == "7200"
    await refused(api, "GetGlobalConfig", 404, "SYS.1003", "category:identity", "name:nope", category="identity",
                  name="nope")
    await refused(api, "GetGlobalConfig", 400, "SYS.1007", "name", category="identity")
    # no session, no answer
    status, body = await api.raw("GetCpuMemoryCapacity", session=False, all=True)
    assert status == 401 and body["error"]["code"] == "ID.1001"
