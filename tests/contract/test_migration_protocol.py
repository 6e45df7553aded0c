"""Agent protocol level and live migration: an agent one level behind the controller still connects (flagged
agentUpgradeNeeded) but has no migration endpoints, so MigrateVm from or to its host is refused before anything
changes, naming the host and both levels (not a half-way failure on a missing endpoint), and it is no migration
candidate. Two real in-process agents (libvirt test driver); the older agent is the same code reporting the older
level (as tests/contract/test_agent_versions.py does)."""

from __future__ import annotations

import pytest
import test_controller_compute as tcc
from test_controller_compute import Env
from test_vm_migration_api import _snapshot

from controller.version import PROTOCOL_LEVEL
from kvmagent.contract.version import MIGRATION_LEVEL
from kvmagent.handlers import host as agent_host

env = tcc.env


async def test_migration_to_or_from_an_older_agent_is_refused(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    e = env
    assert MIGRATION_LEVEL == PROTOCOL_LEVEL  # this release's bump: one level behind has no migration
    status, body = await e.create_vm("vm")
    assert status == 200, body
    vm = body["inventory"]
    src = vm["hostUuid"]
    old = next(h for h in await e.hosts() if h["uuid"] != src)
    monkeypatch.setattr(agent_host, "PROTOCOL_LEVEL", PROTOCOL_LEVEL - 1)
    await e.call("ReconnectHost", uuid=old["uuid"])
    monkeypatch.undo()
    h = next(h for h in await e.hosts() if h["uuid"] == old["uuid"])
    assert (h["status"], h["agentProtocol"], h["agentUpgradeNeeded"]) == ("Connected", PROTOCOL_LEVEL - 1, True)
    # to the older agent: no candidate; an explicit hostUuid refused naming the host and the levels
    assert (await e.call("GetVmMigrationCandidateHosts", vmInstanceUuid=vm["uuid"]))["inventories"] == []
    before = await _snapshot(e)
    st, body = await e.raw("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=old["uuid"])
    assert st == 409 and body["error"]["code"] == "HOST_ALLOCATION.1000", body
    details = body["error"]["details"]
    assert old["uuid"] in details and old["managementIp"] in details, details
    assert f"protocol level {PROTOCOL_LEVEL - 1}" in details and f"needs level {MIGRATION_LEVEL}" in details, details
    st, body = await e.raw("MigrateVm", vmInstanceUuid=vm["uuid"])
    assert st == 409 and f"protocol level {PROTOCOL_LEVEL - 1}" in body["error"]["details"], body
    assert await _snapshot(e) == before
    # from the older agent: refused before anything changes, naming its host and the levels
    status, body = await e.create_vm("on-old", hostUuid=old["uuid"])
    assert status == 200, body
    on_old = body["inventory"]
    before = await _snapshot(e)
    st, body = await e.raw("MigrateVm", vmInstanceUuid=on_old["uuid"], hostUuid=src)
    assert st == 409 and body["error"]["code"] == "SYS.1006", body
    details = body["error"]["details"]
    assert old["uuid"] in details and old["managementIp"] in details and f"level {PROTOCOL_LEVEL - 1}" in details
    assert f"needs level {MIGRATION_LEVEL}" in details and f"controller's is {PROTOCOL_LEVEL}" in details, details
    assert await _snapshot(e) == before
    assert (await e.vm(on_old["uuid"]))["state"] == "Running"
    # upgraded (the next connect reports the current level): a candidate again
    await e.call("ReconnectHost", uuid=old["uuid"])
    assert [h["uuid"] for h in (await e.call("GetVmMigrationCandidateHosts", vmInstanceUuid=vm["uuid"])
                                )["inventories"]] == [old["uuid"]]
