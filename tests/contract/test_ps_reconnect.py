"""ReconnectPrimaryStorage and SyncPrimaryStorageCapacity against two real in-process agents."""

from __future__ import annotations

from typing import Any

import test_controller_compute as tcc
from test_controller_compute import Env

env = tcc.env


async def _ps(e: Env) -> dict[str, Any]:
    return dict((await e.call("QueryPrimaryStorage", conditions=[]))["inventories"][0])


async def test_sync_capacity_repairs_drift(env: Env) -> None:
    e = env
    ps = await _ps(e)
    good = await e.core.db.fetchall("SELECT * FROM LocalStorageHostRef ORDER BY hostUuid")
    async with e.core.db.write() as tx:   # figures gone stale (e.g. a disk replaced behind the controller)
        await tx.execute("UPDATE LocalStorageHostRef SET totalCapacity=1, availableCapacity=1")
        await tx.execute("UPDATE PrimaryStorage SET totalCapacity=2, availableCapacity=2")
    inv = await e.inv("SyncPrimaryStorageCapacity", primaryStorageUuid=ps["uuid"])
    now = await e.core.db.fetchall("SELECT * FROM LocalStorageHostRef ORDER BY hostUuid")
    assert [r["totalCapacity"] for r in now] == [r["totalCapacity"] for r in good]
    assert inv["totalCapacity"] == sum(r["totalCapacity"] for r in now) > 2
    assert inv["availableCapacity"] == sum(r["availableCapacity"] for r in now)
    got, body = await e.raw("SyncPrimaryStorageCapacity", primaryStorageUuid="6" * 32)
    assert got == 404 and "primaryStorageUuid" in body["error"]["details"]


async def test_reconnect_connected_then_disconnected_naming_the_host(env: Env) -> None:
    e = env
    ps = await _ps(e)
    inv = await e.inv("ReconnectPrimaryStorage", uuid=ps["uuid"])
    assert inv["status"] == "Connected" and inv["totalCapacity"] > 0
    # one host's agent goes away (its row still says Connected): the reconnect names it and fails
    dead = e.agents[1]
    await dead.runner.cleanup()
    e.agents.remove(dead)
    got, body = await e.raw("ReconnectPrimaryStorage", uuid=ps["uuid"])
    assert got in (502, 503) and dead.ip in body["error"]["details"], body
    assert (await _ps(e))["status"] == "Disconnected"
    # the host is marked Disconnected: the storage reconnects over the hosts that remain
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE Host SET status='Disconnected' WHERE managementIp=?", (dead.ip,))
    assert (await e.inv("ReconnectPrimaryStorage", uuid=ps["uuid"]))["status"] == "Connected"
    got, body = await e.raw("ReconnectPrimaryStorage", uuid="7" * 32)
    assert got == 404 and body["error"]["code"] == "SYS.1003"
