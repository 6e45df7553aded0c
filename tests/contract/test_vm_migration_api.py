"""MigrateVm / GetVmMigrationCandidateHosts rules against two real in-process agents (libvirt test driver, local
primary storage): every refusal names the field, the value and what is allowed, and changes nothing; a migration
that fails half-way (the destination refuses to create a disk file that exists: both in-process agents share this
machine's filesystem) leaves the VM Running on its host with every capacity as before and the source's files
untouched. The migration itself is proven on the testbed (tests/e2e/test_live_migration.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import pytest
import test_controller_compute as tcc
from test_controller_compute import Env

from kvmagent.server import CTX

env = tcc.env  # the fixture: a controller, two connected in-process agents, a local PS attached


async def _snapshot(e: Env) -> tuple[Any, ...]:
    """Everything a refused or failed migration must leave as it was."""
    vms = [dict(r) for r in await e.core.db.fetchall("SELECT uuid, state, hostUuid, lastHostUuid, clusterUuid "
                                                     "FROM VmInstance ORDER BY uuid")]
    hosts = [dict(r) for r in await e.core.db.fetchall("SELECT uuid, availableCpuCapacity, availableMemoryCapacity "
                                                       "FROM Host ORDER BY uuid")]
    ls = [dict(r) for r in await e.core.db.fetchall("SELECT hostUuid, availableCapacity FROM LocalStorageHostRef "
                                                    "ORDER BY hostUuid")]
    refs = [dict(r) for r in await e.core.db.fetchall("SELECT resourceUuid, hostUuid FROM LocalStorageResourceRef "
                                                      "ORDER BY resourceUuid")]
    return vms, hosts, ls, refs


async def _refused(e: Env, params: dict[str, Any], status: int, code: str, *words: str) -> None:
    before = await _snapshot(e)
    st, body = await e.raw("MigrateVm", **params)
    assert st == status and body["error"]["code"] == code, body
    assert all(w in body["error"]["details"] for w in words), body
    assert await _snapshot(e) == before


async def _candidates(e: Env, vm: str) -> list[str]:
    return [h["uuid"] for h in (await e.call("GetVmMigrationCandidateHosts", vmInstanceUuid=vm))["inventories"]]


async def test_migration_rules_change_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    e = env
    status, body = await e.create_vm("vm1")
    assert status == 200, body
    vm = body["inventory"]
    src = vm["hostUuid"]
    other = next(h["uuid"] for h in await e.hosts() if h["uuid"] != src)
    assert await _candidates(e, vm["uuid"]) == [other]
    unknown = "0" * 32
    await _refused(e, {"vmInstanceUuid": unknown}, 404, "SYS.1003", "vmInstanceUuid", unknown)
    await _refused(e, {"vmInstanceUuid": vm["uuid"], "hostUuid": unknown}, 404, "SYS.1003", "hostUuid", unknown)
    await _refused(e, {"vmInstanceUuid": vm["uuid"], "hostUuid": src}, 400, "SYS.1007", "hostUuid", src,
                   "allowed: a Connected and Enabled host other than")
    # a Disabled host, then a Disconnected one: refused by name, and no candidate left
    await e.call("ChangeHostState", uuid=other, stateEvent="disable")
    assert await _candidates(e, vm["uuid"]) == []
    await _refused(e, {"vmInstanceUuid": vm["uuid"], "hostUuid": other}, 409, "HOST_ALLOCATION.1000", "hostUuid",
                   other, "Disabled", "allowed:")
    await _refused(e, {"vmInstanceUuid": vm["uuid"]}, 409, "HOST_ALLOCATION.1000", "no host can receive", other)
    await e.call("ChangeHostState", uuid=other, stateEvent="enable")
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE Host SET status='Disconnected' WHERE uuid=?", (other,))
    await _refused(e, {"vmInstanceUuid": vm["uuid"], "hostUuid": other}, 409, "HOST_ALLOCATION.1000", "hostUuid",
                   other, "Disconnected", "not Connected and Enabled")
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE Host SET status='Connected' WHERE uuid=?", (other,))
    # not enough memory on the destination
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE Host SET availableMemoryCapacity=1024 WHERE uuid=?", (other,))
    assert await _candidates(e, vm["uuid"]) == []
    await _refused(e, {"vmInstanceUuid": vm["uuid"], "hostUuid": other}, 409, "HOST_ALLOCATION.1000",
                   "bytes of memory free")
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE Host SET availableMemoryCapacity=availableMemoryCapacity+? WHERE uuid=?",
                         (8 << 30, other))
        await tx.execute("UPDATE Host SET availableMemoryCapacity=totalMemoryCapacity-? WHERE uuid=?",
                         (512 << 20, other))
    # kvm/vm.cpuMode host-model passes the host CPU to the guest: only a host of the same CPU model receives it
    driver = tcc._agent(e, other).app[CTX].driver
    real = driver.host_facts

    async def other_model() -> Any:
        return dataclasses.replace(await real(), cpu_model="Some-Other-CPU")

    monkeypatch.setattr(driver, "host_facts", other_model)
    assert await _candidates(e, vm["uuid"]) == [other]  # vm.cpuMode is none: the model does not matter
    await e.call("UpdateGlobalConfig", category="kvm", name="vm.cpuMode", value="host-model")
    assert await _candidates(e, vm["uuid"]) == []
    await _refused(e, {"vmInstanceUuid": vm["uuid"], "hostUuid": other}, 409, "HOST_ALLOCATION.1000", "hostUuid",
                   "Some-Other-CPU", "same CPU model")
    monkeypatch.undo()
    assert await _candidates(e, vm["uuid"]) == [other]
    await e.call("UpdateGlobalConfig", category="kvm", name="vm.cpuMode", value="none")
    # wrong state: only a Running VM migrates (1.0's VM.1010 naming the allowed states)
    await e.call("StopVmInstance", uuid=vm["uuid"])
    await _refused(e, {"vmInstanceUuid": vm["uuid"], "hostUuid": other}, 409, "VM.1010", "Stopped", "['Running']")
    st, body = await e.raw("GetVmMigrationCandidateHosts", vmInstanceUuid=vm["uuid"])
    assert st == 409 and body["error"]["code"] == "VM.1010", body


async def test_failed_migration_leaves_the_vm_running_on_its_host(env: Env) -> None:
    e = env
    status, body = await e.create_vm("vm2")
    assert status == 200, body
    vm = body["inventory"]
    other = next(h["uuid"] for h in await e.hosts() if h["uuid"] != vm["hostUuid"])
    root = (await e.call("QueryVolume", conditions=[{"name": "uuid", "op": "=", "value": vm["rootVolumeUuid"]}])
            )["inventories"][0]
    before = await _snapshot(e)
    st, body = await e.raw("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=other)
    assert st >= 400 and body["error"]["code"] == "HOST.1009", body
    assert "still runs on the source host" in body["error"]["details"] and "already exists" in body["error"]["details"]
    assert await _snapshot(e) == before
    assert await asyncio.to_thread(os.path.isfile, root["installPath"])  # the source's file is never touched
    now = await e.vm(vm["uuid"])
    assert (now["state"], now["hostUuid"]) == ("Running", vm["hostUuid"])
    assert await tcc._domains(tcc._agent(e, vm["hostUuid"])) == {vm["uuid"]: "Running"}
    assert await tcc._domains(tcc._agent(e, other)) == {}
    await tcc._capacity_exact(e)


async def test_migration_interrupted_by_a_controller_crash_is_committed_where_the_vm_runs(env: Env) -> None:
    """The controller died after libvirt had moved the VM (it runs on the destination, the row still says
    Migrating on the source): crash recovery finds it on the destination and commits the migration there."""
    from controller.compute import recovery

    e = env
    status, body = await e.create_vm("vm3")
    assert status == 200, body
    vm = body["inventory"]
    src, dest = vm["hostUuid"], next(h["uuid"] for h in await e.hosts() if h["uuid"] != vm["hostUuid"])
    root = (await e.call("QueryVolume", conditions=[{"name": "uuid", "op": "=", "value": vm["rootVolumeUuid"]}])
            )["inventories"][0]
    # what libvirt leaves after a finished migration: the domain defined and running on the destination only
    a, b = tcc._agent(e, src).app[CTX].driver, tcc._agent(e, dest).app[CTX].driver
    xml = await (await a._guest(vm["uuid"], "reading")).xml(inactive=True)
    await (await b.host.define(xml)).create()
    await a.destroy_vm(vm["uuid"], undefine=True)
    for _ in range(100):  # the source agent's stop report (a real migration mutes it; this one does not)
        if (await e.vm(vm["uuid"]))["state"] == "Stopped":
            break
        await asyncio.sleep(0.1)
    # the row as the dead controller left it, and the capacity repair every controller start makes
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE VmInstance SET state='Migrating', hostUuid=?, lastHostUuid=NULL WHERE uuid=?",
                         (src, vm["uuid"]))
    await recovery.release_leaks(e.core)
    src_host = dict(await e.core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (src,)))
    done = await recovery.reconcile_host(e.core, src_host, await recovery.vm_states(e.core, src_host))
    assert "committed there" in done[vm["uuid"]], done
    now = await e.vm(vm["uuid"])
    assert (now["state"], now["hostUuid"], now["lastHostUuid"]) == ("Running", dest, src)
    refs = await e.core.db.fetchall("SELECT hostUuid FROM LocalStorageResourceRef WHERE resourceUuid=?",
                                    (vm["rootVolumeUuid"],))
    assert [r["hostUuid"] for r in refs] == [dest]
    await tcc._capacity_exact(e)
    ls = {r["hostUuid"]: dict(r) for r in await e.core.db.fetchall("SELECT * FROM LocalStorageHostRef")}
    for h, row in ls.items():
        used = await e.core.db.fetchone("SELECT COALESCE(SUM(size), 0) FROM LocalStorageResourceRef WHERE hostUuid=?",
                                        (h,))
        assert row["availableCapacity"] == row["totalCapacity"] - used[0], (h, row)
    assert not await asyncio.to_thread(os.path.isfile, root["installPath"])  # the source's copy is deleted
