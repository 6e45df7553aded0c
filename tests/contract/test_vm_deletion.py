"""VM deletion policies against real in-process agents: Delay (recover, expunge), Direct, Never, the expunge
task on time, and recover of an expunged or never-deleted VM (1.0's errors)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from test_controller_compute import Env, _capacity_exact


def _exists(path: str) -> bool:
    return os.path.exists(path)


async def _root_path(env: Env, vm: dict[str, Any]) -> str:
    row = await env.core.db.fetchone("SELECT installPath FROM Volume WHERE uuid=?", (vm["rootVolumeUuid"],))
    assert row is not None and row["installPath"]
    return str(row["installPath"])


async def _running_vm(env: Env, name: str) -> dict[str, Any]:
    status, body = await env.create_vm(name)
    assert status == 200, body
    return body["inventory"]


async def test_delay_destroy_recover_start(env: Env) -> None:
    vm = await _running_vm(env, "delay")
    path = await _root_path(env, vm)
    await env.call("DestroyVmInstance", uuid=vm["uuid"])
    d = await env.vm(vm["uuid"])
    assert d["state"] == "Destroyed" and d["hostUuid"] is None and d["vmNics"][0]["ip"] is None
    assert d["allVolumes"][0]["status"] == "Deleted" and _exists(path)
    await _capacity_exact(env)
    assert await env.core.db.fetchone("SELECT 1 FROM UsedIp WHERE ip=?", (vm["vmNics"][0]["ip"],)) is None
    r = await env.inv("RecoverVmInstance", uuid=vm["uuid"])
    assert r["state"] == "Stopped" and r["allVolumes"][0]["status"] == "Ready" and r["vmNics"][0]["ip"] is None
    s = await env.inv("StartVmInstance", uuid=vm["uuid"])
    assert s["state"] == "Running" and s["vmNics"][0]["ip"] and s["hostUuid"] == vm["hostUuid"]
    await _capacity_exact(env)
    status, body = await env.raw("RecoverVmInstance", uuid=vm["uuid"])
    assert status == 409 and body["error"]["code"] == "VM.1010" and "Destroyed" in body["error"]["details"]


async def test_expunge_removes_files_rows_and_tags(env: Env) -> None:
    vm = await _running_vm(env, "exp")
    await env.call("CreateUserTag", resourceType="VmInstanceVO", resourceUuid=vm["uuid"], tag="owner::bob")
    path = await _root_path(env, vm)
    status, body = await env.raw("ExpungeVmInstance", uuid=vm["uuid"])
    assert status == 409 and body["error"]["code"] == "VM.1010"
    await env.call("DestroyVmInstance", uuid=vm["uuid"])
    await env.call("ExpungeVmInstance", uuid=vm["uuid"])
    assert not _exists(path)
    for table, col in (("VmInstance", "uuid"), ("VmNic", "vmInstanceUuid"), ("UserTag", "resourceUuid")):
        assert await env.core.db.fetchone(f"SELECT 1 FROM {table} WHERE {col}=?", (vm["uuid"],)) is None
    assert await env.core.db.fetchone("SELECT 1 FROM Volume WHERE uuid=?", (vm["rootVolumeUuid"],)) is None
    status, body = await env.raw("RecoverVmInstance", uuid=vm["uuid"])
    assert status == 404 and body["error"]["code"] == "SYS.1003"


async def test_direct_policy_deletes_at_once(env: Env) -> None:
    await env.call("UpdateGlobalConfig", category="vm", name="deletionPolicy", value="Direct")
    vm = await _running_vm(env, "direct")
    path = await _root_path(env, vm)
    await env.call("DestroyVmInstance", uuid=vm["uuid"])
    assert (await env.call("QueryVmInstance", conditions=[{"name": "uuid", "op": "=", "value": vm["uuid"]}]))[
        "inventories"] == []
    assert not _exists(path)
    await _capacity_exact(env)


async def test_expunge_task_on_time_and_never_policy(env: Env) -> None:
    await env.call("UpdateGlobalConfig", category="vm", name="expungePeriod", value="2")
    await env.call("UpdateGlobalConfig", category="vm", name="expungeInterval", value="1")
    delayed = await _running_vm(env, "delayed")
    await env.call("DestroyVmInstance", uuid=delayed["uuid"])
    await asyncio.sleep(1.0)
    assert (await env.vm(delayed["uuid"]))["state"] == "Destroyed"  # not before expungePeriod
    for _ in range(50):
        rows = (await env.call("QueryVmInstance", conditions=[{"name": "uuid", "op": "=",
                                                               "value": delayed["uuid"]}]))["inventories"]
        if not rows:
            break
        await asyncio.sleep(0.2)
    assert rows == [], "a Delay VM was not expunged within expungePeriod + 2 intervals + margin"
    await env.call("UpdateGlobalConfig", category="vm", name="deletionPolicy", value="Never")
    kept = await _running_vm(env, "kept")
    await env.call("DestroyVmInstance", uuid=kept["uuid"])
    await asyncio.sleep(4.0)
    assert (await env.vm(kept["uuid"]))["state"] == "Destroyed"
    assert (await env.inv("RecoverVmInstance", uuid=kept["uuid"]))["state"] == "Stopped"
