"""ChangeHostState stateEvent=maintain (1.0's maintenance, reference nfs-migration.md §B.6) against two real
in-process agents (libvirt test driver, local primary storage): the host is emptied (VMs migrated away by
MigrateVm's path, VMs that cannot move stopped or the call refused, per host/maintenance.unmovableVmPolicy), then
Maintenance; a failure half-way puts the host back to its former state, keeps the VMs already moved where they
went and names the VMs that failed; enable leaves Maintenance.

The test driver cannot live-migrate and both agents share this machine's filesystem, so a real migration here
fails at the destination ("already exists": what every "cannot move" path below uses). Where a test needs a VM
that DOES move, :func:`_moves` replaces only the hypervisor part of that VM's migration (what libvirt and
``/vm/migrate/prepare`` do on two real hosts: the domain leaves the source for the destination) and keeps the
controller's own steps (reservation, commit); the real migration is proven on the testbed
(tests/e2e/test_live_migration.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
import test_controller_compute as tcc
from test_controller_compute import Env
from test_vm_migration_api import _snapshot

from controller.compute import migrate
from kvmagent.handlers.migrate import MIGRATION_STATES
from kvmagent.server import CTX

env = tcc.env  # the fixture: a controller, two connected in-process agents, a local PS attached


async def _vm_on(e: Env, name: str, host: str) -> dict[str, Any]:
    status, body = await e.create_vm(name, hostUuid=host)
    assert status == 200 and body["inventory"]["hostUuid"] == host, body
    return dict(body["inventory"])


async def _host(e: Env, uuid: str) -> dict[str, Any]:
    return next(h for h in await e.hosts() if h["uuid"] == uuid)


async def _hosts(e: Env) -> tuple[str, str]:
    a, b = (h["uuid"] for h in await e.hosts())
    return a, b


@dataclass
class Seen:
    started: list[str] = field(default_factory=list)  # every VM whose migration started
    running: int = 0
    most: int = 0  # the most migrations that ran at once


def _moves(e: Env, monkeypatch: pytest.MonkeyPatch, moving: set[str], *, overlap: bool = False) -> Seen:
    """The VMs in ``moving`` migrate (hypervisor part replaced, see the module docstring); the others run the
    real migration, which fails here. ``overlap``: each migration waits until two have started (proves that two
    run at once)."""
    real = migrate.Migration.run
    seen = Seen()
    two = asyncio.Event()

    async def run(self: migrate.Migration) -> None:
        seen.started.append(self.vm["uuid"])
        seen.running += 1
        seen.most = max(seen.most, seen.running)
        if seen.running >= 2:
            two.set()
        try:
            await step(self)
        finally:
            seen.running -= 1

    async def step(self: migrate.Migration) -> None:
        uuid = self.vm["uuid"]
        if overlap:
            await asyncio.wait_for(two.wait(), 60)
        if uuid not in moving:
            return await real(self)
        await self._reserve()
        src, dst = tcc._agent(e, self.src["uuid"]).app[CTX], tcc._agent(e, self.dest["uuid"]).app[CTX]
        dst.judger.expect_for(uuid, MIGRATION_STATES, 60)
        src.judger.expect(uuid, MIGRATION_STATES)
        xml = await (await src.driver._guest(uuid, "reading")).xml(inactive=True)
        await (await dst.driver.host.define(xml)).create()
        await src.driver.destroy_vm(uuid, undefine=True)
        src.judger.settle(uuid)
        await self._done()
        await self._commit()
        return None

    monkeypatch.setattr(migrate.Migration, "run", run)
    return seen


async def test_maintenance_without_vms_and_enable(env: Env) -> None:
    e = env
    a, b = await _hosts(e)
    host = (await e.call("ChangeHostState", uuid=a, stateEvent="maintain"))["inventory"]
    assert host["state"] == "Maintenance", host
    assert (await e.call("ChangeHostState", uuid=a, stateEvent="maintain"))["inventory"]["state"] == "Maintenance"
    # a host in Maintenance receives no VM
    vm = await _vm_on(e, "elsewhere", b)
    assert (await e.call("GetVmMigrationCandidateHosts", vmInstanceUuid=vm["uuid"]))["inventories"] == []
    st, body = await e.create_vm("refused", hostUuid=a)
    assert st >= 400, body
    assert (await e.call("ChangeHostState", uuid=a, stateEvent="enable"))["inventory"]["state"] == "Enabled"
    assert [h["uuid"] for h in (await e.call("GetVmMigrationCandidateHosts", vmInstanceUuid=vm["uuid"])
                                )["inventories"]] == [a]
    # from Disabled too
    await e.call("ChangeHostState", uuid=a, stateEvent="disable")
    assert (await e.call("ChangeHostState", uuid=a, stateEvent="maintain"))["inventory"]["state"] == "Maintenance"
    st, body = await e.raw("ChangeHostState", uuid=a, stateEvent="sleep")
    assert st == 400 and body["error"]["code"] == "SYS.1007" and "stateEvent" in body["error"]["details"], body


async def test_maintenance_interrupted_by_a_controller_stop_leaves_the_host_disabled(env: Env) -> None:
    """A controller that died while a host was PreMaintenance: recovery makes it Disabled (nothing placed on
    it); maintain then finishes, and a host in another state is not touched."""
    from controller.compute.recovery import resolve_interrupted_maintenance

    e = env
    a, b = await _hosts(e)
    async with e.core.db.write() as tx:
        await tx.update("Host", {"uuid": a}, {"state": "PreMaintenance"})
    assert await resolve_interrupted_maintenance(e.core) == [a]
    assert (await _host(e, a))["state"] == "Disabled"
    assert (await _host(e, b))["state"] == "Enabled"
    st, body = await e.create_vm("refused", hostUuid=a)
    assert st >= 400, body
    assert (await e.call("ChangeHostState", uuid=a, stateEvent="maintain"))["inventory"]["state"] == "Maintenance"
    assert await resolve_interrupted_maintenance(e.core) == []


async def test_stop_policy_moves_what_can_move_and_stops_the_rest(env: Env, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    e = env
    a, b = await _hosts(e)
    moving = await _vm_on(e, "moving", a)
    stuck = await _vm_on(e, "stuck", a)  # its migration fails: stopped (1.0)
    lost = await _vm_on(e, "lost", a)  # Unknown: not migrated, stopped (1.0)
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE VmInstance SET state='Unknown' WHERE uuid=?", (lost["uuid"],))
    await e.call("UpdateGlobalConfig", category="kvm", name="vm.migrationQuantity", value="1")
    seen = _moves(e, monkeypatch, {moving["uuid"]})
    host = (await e.call("ChangeHostState", uuid=a, stateEvent="maintain"))["inventory"]
    assert host["state"] == "Maintenance", host
    assert sorted(seen.started) == sorted([moving["uuid"], stuck["uuid"]])  # the Unknown VM is not migrated
    assert seen.most == 1  # kvm/vm.migrationQuantity
    now = {u: await e.vm(u) for u in (moving["uuid"], stuck["uuid"], lost["uuid"])}
    assert (now[moving["uuid"]]["state"], now[moving["uuid"]]["hostUuid"]) == ("Running", b)
    for u in (stuck["uuid"], lost["uuid"]):
        assert (now[u]["state"], now[u]["hostUuid"], now[u]["lastHostUuid"]) == ("Stopped", None, a), now[u]
    # the stopped VMs' disks stay on the host in maintenance; the moved VM's went with it
    refs = {r["resourceUuid"]: r["hostUuid"] for r in await e.core.db.fetchall(
        "SELECT resourceUuid, hostUuid FROM LocalStorageResourceRef")}
    assert refs[stuck["rootVolumeUuid"]] == refs[lost["rootVolumeUuid"]] == a
    assert refs[moving["rootVolumeUuid"]] == b
    assert await tcc._domains(tcc._agent(e, b)) == {moving["uuid"]: "Running"}
    assert "Running" not in (await tcc._domains(tcc._agent(e, a))).values()
    await tcc._capacity_exact(e)
    # enable leaves Maintenance; a stopped VM starts again on its disks' host
    assert (await e.call("ChangeHostState", uuid=a, stateEvent="enable"))["inventory"]["state"] == "Enabled"
    started = await e.inv("StartVmInstance", uuid=stuck["uuid"])
    assert (started["state"], started["hostUuid"]) == ("Running", a)


async def test_refuse_policy_refuses_before_anything_moves(env: Env) -> None:
    e = env
    a, b = await _hosts(e)
    vm = await _vm_on(e, "vm", a)
    await e.call("UpdateGlobalConfig", category="host", name="maintenance.unmovableVmPolicy", value="Refuse")
    await e.call("ChangeHostState", uuid=b, stateEvent="disable")  # no host can receive the VM
    before = await _snapshot(e)
    st, body = await e.raw("ChangeHostState", uuid=a, stateEvent="maintain")
    assert st == 409 and body["error"]["code"] == "SYS.1006", body
    details = body["error"]["details"]
    assert vm["uuid"] in details and "no host can receive" in details and "Refuse" in details, details
    assert "nothing was changed" in details
    assert await _snapshot(e) == before
    assert (await _host(e, a))["state"] == "Enabled"
    assert await tcc._domains(tcc._agent(e, a)) == {vm["uuid"]: "Running"}
    st, body = await e.raw("UpdateGlobalConfig", category="host", name="maintenance.unmovableVmPolicy",
                           value="Later")
    assert st == 400 and "maintenance.unmovableVmPolicy" in body["error"]["details"] and "Later" in \
        body["error"]["details"], body


async def test_failure_half_way_restores_the_host_and_keeps_moved_vms(env: Env, monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    e = env
    a, b = await _hosts(e)
    moving = await _vm_on(e, "moving", a)
    stuck = await _vm_on(e, "stuck", a)
    await e.call("ChangeHostState", uuid=a, stateEvent="disable")  # the former state the host returns to
    await e.call("UpdateGlobalConfig", category="host", name="maintenance.unmovableVmPolicy", value="Refuse")
    seen = _moves(e, monkeypatch, {moving["uuid"]}, overlap=True)
    st, body = await e.raw("ChangeHostState", uuid=a, stateEvent="maintain")
    assert st == 409 and body["error"]["code"] == "SYS.1006", body
    details = body["error"]["details"]
    assert f"vm[uuid:{stuck['uuid']}]" in details and "already exists" in details, details
    assert moving["uuid"] not in details and "Disabled again" in details, details
    assert (await _host(e, a))["state"] == "Disabled"
    assert seen.most == 2  # kvm/vm.migrationQuantity's default: two at a time
    now = {u: await e.vm(u) for u in (moving["uuid"], stuck["uuid"])}
    assert (now[moving["uuid"]]["state"], now[moving["uuid"]]["hostUuid"]) == ("Running", b)
    assert (now[stuck["uuid"]]["state"], now[stuck["uuid"]]["hostUuid"]) == ("Running", a)
    assert await tcc._domains(tcc._agent(e, a)) == {stuck["uuid"]: "Running"}
    assert await tcc._domains(tcc._agent(e, b)) == {moving["uuid"]: "Running"}
    await tcc._capacity_exact(e)
