"""The controller killed at exact points of MigrateVm, host maintenance and the virtual router's life
(tests/contract/crashlab.py: after the targeted commit nothing of the dying controller reaches the database or a
host; a fresh controller starts on the same database), then its own recovery and one ReconnectHost of every
host: no VM, host, router or job stays in a transitional state, the records are what the agents run, capacity
and IPs are what CheckConsistency derives (no findings), a router runs the newest generation.

The libvirt test driver cannot live-migrate and both agents share this machine's filesystem: as in
test_migration_progress, the source driver's ``migrate_vm`` does what libvirt does on two real hosts (the domain
leaves the source for the destination) and ``/vm/migrate/prepare`` finds the disk files there; every controller
step is the real one."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import test_controller_compute as tcc
from crashlab import CrashLab, wait_for
from test_vrouter_lifecycle import Routers, ServedRouter, routed_l3

from controller.compute import migrate
from controller.vrouter_provider import health, hooks, router
from kvmagent.driver import migration
from kvmagent.driver.base import VmState
from kvmagent.driver.xml.channel import channel_socket
from kvmagent.handlers import migrate as agent_migrate
from kvmagent.handlers import vrouter as relay
from kvmagent.server import CTX

MiB = 1 << 20


@pytest.fixture
async def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[CrashLab]:
    lab = CrashLab(tmp_path, monkeypatch)
    try:
        await lab.start()
        yield lab
    finally:
        await lab.close()


def libvirt_migrates(lab: CrashLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """What libvirt and the destination's prepare do on two real hosts (see the module docstring)."""
    async def shared_disks(ctx: Any, storage_path: str, disks: Any) -> list[str]:
        return []   # the one shared filesystem: the source's files are the destination's

    async def keep_shared_files(self: Any) -> None:
        return None

    monkeypatch.setattr(agent_migrate, "_create_disks", shared_disks)
    monkeypatch.setattr(migrate.Migration, "_delete_source_files", keep_shared_files)
    by_ip = {a.ip: a for a in lab.agents}
    for a in lab.agents:
        frm = a.app[CTX]

        async def migrate_vm(vm_uuid: str, dest_ip: str, *, copy_storage: bool, timeout: float,
                             frm: Any = frm) -> tuple[float, int | None]:
            to = by_ip[dest_ip].app[CTX]
            xml = await (await frm.driver._guest(vm_uuid, "reading")).xml(inactive=True)
            await (await to.driver.host.define(xml)).create()
            await frm.driver.destroy_vm(vm_uuid, undefine=True)
            return 0.5, 64 * MiB

        monkeypatch.setattr(frm.driver, "migrate_vm", migrate_vm)


async def _vm_on(lab: CrashLab, name: str, host: str) -> dict[str, Any]:
    status, body = await lab.env.create_vm(name, hostUuid=host)
    assert status == 200 and body["inventory"]["hostUuid"] == host, body
    return dict(body["inventory"])


def _hosts(lab: CrashLab) -> tuple[str, str]:
    return lab.agents[0].config.host_uuid, lab.agents[1].config.host_uuid


# ---------------------------------------------------------------------------------------------- MigrateVm
async def test_migrate_killed_after_the_reservation(lab: CrashLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the transaction that set the VM Migrating and reserved CPU, memory and local storage on the
    destination: the VM is Running on its host again, the reservation is gone, the job is Failed, and the
    destination takes the VM when it is migrated again."""
    a, b = _hosts(lab)
    vm = await _vm_on(lab, "vm", a)
    lab.crash_after(migrate.Migration, "_reserve")
    job = await lab.submit("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=b)
    e = await lab.restart()
    await lab.healed()
    now = await e.vm(vm["uuid"])
    assert (now["state"], now["hostUuid"]) == ("Running", a), now
    assert (await e.core.jobs.get(job))["state"] == "Failed"
    libvirt_migrates(lab, monkeypatch)
    moved = await e.inv("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=b)
    assert (moved["state"], moved["hostUuid"]) == ("Running", b), moved
    await lab.healed()


def _not_muted(e: tcc.Env, host_uuid: str, vm_uuid: str) -> Any:
    """The host's agent no longer expects a migration of the VM beyond its usual ttl (it was told the migration
    ended): its event judger, for more checks."""
    judger = tcc._agent(e, host_uuid).app[CTX].judger
    exp = judger._exp.get(vm_uuid)
    assert exp is None or (exp.running == 0 and exp.until - judger.clock() <= judger.ttl), exp
    return judger


async def test_migrate_killed_after_the_destination_was_prepared(lab: CrashLab, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """Killed after ``/vm/migrate/prepare`` on the destination and the start extensions there, before the source
    was asked to migrate: the VM is Running on its host, and the destination agent no longer mutes the VM's events
    (it expected the migration for the migration's whole time bound)."""
    a, b = _hosts(lab)
    vm = await _vm_on(lab, "vm", a)
    libvirt_migrates(lab, monkeypatch)
    lab.crash_after(migrate.Migration, "_prepare")
    await lab.submit("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=b)
    e = await lab.restart()
    await lab.healed()
    now = await e.vm(vm["uuid"])
    assert (now["state"], now["hostUuid"]) == ("Running", a), now
    _not_muted(e, b, vm["uuid"])


async def test_migrate_killed_after_libvirt_moved_the_vm(lab: CrashLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the source agent answered that the domain left it (it runs on the destination) and before
    the commit: recovery commits the migration where the VM runs, and the destination agent, told the migration
    ended, reports the VM's events again (before: muted for the migration's whole time bound)."""
    a, b = _hosts(lab)
    vm = await _vm_on(lab, "vm", a)
    libvirt_migrates(lab, monkeypatch)
    lab.crash_before(migrate.Migration, "_done")
    await lab.submit("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=b)
    e = await lab.restart()
    await lab.healed()
    now = await e.vm(vm["uuid"])
    assert (now["state"], now["hostUuid"], now["lastHostUuid"]) == ("Running", b, a), now
    refs = await e.core.db.fetchall("SELECT hostUuid FROM LocalStorageResourceRef WHERE resourceUuid=?",
                                    (vm["rootVolumeUuid"],))
    assert [r["hostUuid"] for r in refs] == [b]
    judger = _not_muted(e, b, vm["uuid"])
    # an out-of-band stop on the destination is reported once the judger's usual ttl has passed
    judger.clock = lambda: 1e12
    await tcc._agent(e, b).app[CTX].driver.destroy_vm(vm["uuid"], undefine=False)

    async def stopped() -> bool:
        return (await e.vm(vm["uuid"]))["state"] == "Stopped"

    await wait_for(stopped, 20, "the destination agent to report the out-of-band stop")


async def test_migrate_killed_while_libvirt_still_migrates(lab: CrashLab, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Killed while the source agent's libvirt job runs (the controller waits for ``/vm/migrate``; the agent
    carries on): the restarted controller leaves the VM Migrating while the source reports the job (before: it
    called the VM Running on the source, and the domain then ended on the destination), and commits it where
    the job put it once it ended (at the host's reconnect)."""
    a, b = _hosts(lab)
    vm = await _vm_on(lab, "vm", a)
    libvirt_migrates(lab, monkeypatch)
    src = tcc._agent(lab.env, a).app[CTX]
    moves = src.driver.migrate_vm
    release = asyncio.Event()

    async def slow(vm_uuid: str, dest_ip: str, *, copy_storage: bool, timeout: float) -> tuple[float, int | None]:
        migration.LIVE[vm_uuid] = {}   # what the real driver records as soon as the job runs
        lab.die()
        try:
            await asyncio.wait_for(release.wait(), 60)
            return await moves(vm_uuid, dest_ip, copy_storage=copy_storage, timeout=timeout)
        finally:
            migration.LIVE.pop(vm_uuid, None)

    monkeypatch.setattr(src.driver, "migrate_vm", slow)
    await lab.submit("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=b)
    e = await lab.restart()
    now = await e.vm(vm["uuid"])
    assert (now["state"], now["hostUuid"]) == ("Migrating", a), now
    release.set()

    async def moved() -> bool:
        return vm["uuid"] in await tcc._domains(tcc._agent(e, b)) and \
            vm["uuid"] not in await tcc._domains(tcc._agent(e, a))

    await wait_for(moved, 20, "the agent's migration to end on the destination")
    await lab.healed()
    now = await e.vm(vm["uuid"])
    assert (now["state"], now["hostUuid"], now["lastHostUuid"]) == ("Running", b, a), now


# ---------------------------------------------------------------------------------------------- maintenance
async def test_maintenance_killed_while_a_vm_is_migrating(lab: CrashLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """ChangeHostState maintain killed after one VM moved and while the second was Migrating (reserved on the
    other host): the host is Disabled (nothing placed on it), the second VM Running where its domain runs; a new
    maintain empties the host."""
    a, b = _hosts(lab)
    first = await _vm_on(lab, "first", a)
    second = await _vm_on(lab, "second", a)
    libvirt_migrates(lab, monkeypatch)
    await lab.env.call("UpdateGlobalConfig", category="kvm", name="vm.migrationQuantity", value="1")
    lab.crash_after(migrate.Migration, "_reserve", when=lambda self: self.vm["uuid"] == second["uuid"])
    await lab.submit("ChangeHostState", uuid=a, stateEvent="maintain")
    e = await lab.restart()
    await lab.healed()
    host = next(h for h in await e.hosts() if h["uuid"] == a)
    assert host["state"] == "Disabled", host
    assert (await e.vm(second["uuid"]))["hostUuid"] == a
    assert (await e.vm(first["uuid"]))["state"] == "Running"
    assert (await e.inv("ChangeHostState", uuid=a, stateEvent="maintain"))["state"] == "Maintenance"
    for vm in (first, second):
        now = await e.vm(vm["uuid"])
        assert (now["state"], now["hostUuid"]) == ("Running", b), now
    await lab.healed()


# ---------------------------------------------------------------------------------------------- virtual router
class LabRouters(Routers):
    """test_vrouter_lifecycle's Routers, following the lab's current controller across the restart."""

    def __init__(self, lab: CrashLab, home: Path, sockets: Path) -> None:
        self.lab = lab
        super().__init__(lab.env, home, sockets)

    async def _watch(self) -> None:
        while True:
            try:
                rows = await asyncio.wait_for(self.lab.env.core.db.fetchall(
                    "SELECT v.uuid, v.hostUuid FROM ApplianceVm a JOIN VmInstance v ON v.uuid = a.uuid WHERE "
                    "v.hostUuid IS NOT NULL"), 2)
            except Exception:   # the controller is being replaced (a closed database's reader never comes)
                rows = []
            for r in rows:
                if r["uuid"] not in self.served:
                    sock = channel_socket(self.sockets / r["hostUuid"][:8], r["uuid"])
                    sock.parent.mkdir(parents=True, exist_ok=True)
                    self.served[r["uuid"]] = ServedRouter(sock, self.home / r["uuid"])
            await asyncio.sleep(0.05)


@pytest.fixture
async def routed(lab: CrashLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LabRouters]:
    """The L3 takes DHCP and DNS from the VirtualRouter provider; every router domain's channel is served by
    the real router agent (test_vrouter_lifecycle.Routers), which outlives the controllers like a router VM."""
    sockets = Path(tempfile.mkdtemp(prefix="zscr", dir="/tmp"))

    def short_socket(state_dir: Path, vm_uuid: str) -> Path:
        return channel_socket(sockets / Path(state_dir).name[:8], vm_uuid)

    monkeypatch.setattr(relay, "channel_socket", short_socket)
    await routed_l3(lab.env, tmp_path)
    routers = LabRouters(lab, tmp_path / "routers", sockets)
    try:
        yield routers
    finally:
        routers.close()
        shutil.rmtree(sockets, ignore_errors=True)


async def _router_current(lab: CrashLab, routers: LabRouters) -> dict[str, Any]:
    """The one router: Running, Connected, and its agent runs the generation the database last pushed."""
    (vr,) = await lab.env.query("QueryVirtualRouterVm")
    row = await lab.env.core.db.fetchone("SELECT generation, status FROM ApplianceVm WHERE uuid=?", (vr["uuid"],))
    served = routers.served[vr["uuid"]]
    assert (vr["state"], row["status"]) == ("Running", "Connected"), (vr, dict(row))
    assert served.router.generation == row["generation"] == served.applied[-1][0]["generation"], dict(row)
    return dict(vr)


async def test_router_killed_before_its_agent_was_initialised(lab: CrashLab, routed: LabRouters) -> None:
    """Killed after the router VM started (Running, status Connecting) and before its agent got its identity
    and state: at the restart the router is reconnected and given the whole state, without waiting for the
    health check's interval; the user VM whose start was making it is rolled back (its create never
    finished)."""
    lab.crash_before(router, "connect_agent")
    await lab.submit("CreateVmInstance", name="vm", instanceOfferingUuid=lab.ids["offering"],
                     imageUuid=lab.ids["image"], l3NetworkUuids=[lab.ids["l3"]])
    e = await lab.restart()
    await lab.healed()

    async def connected() -> bool:
        row = await e.core.db.fetchone("SELECT status FROM ApplianceVm")
        return row is not None and row["status"] == "Connected"

    await wait_for(connected, 20, "the router to be Connected after the restart")
    vr = await _router_current(lab, routed)
    assert [v["uuid"] for v in await e.query("QueryVmInstance", ("type", "=", "UserVm"))] == []
    assert routed.served[vr["uuid"]].applied[-1][0]["dhcp"] == []
    st, body = await e.create_vm("again")
    assert st == 200, body
    assert [d["mac"] for d in routed.served[vr["uuid"]].applied[-1][0]["dhcp"]] == \
        [body["inventory"]["vmNics"][0]["mac"]]
    await _router_current(lab, routed)


async def test_router_push_lost_with_the_controller(lab: CrashLab, routed: LabRouters) -> None:
    """A VM stop committed, the controller killed before the router was pushed the new state: the router still
    serves the stopped VM's lease at the generation the database holds, so the health check alone found it
    ``ok``; the restarted controller pushes every router its whole state again."""
    e = lab.env
    st, body = await e.create_vm("vm")
    assert st == 200, body
    vm = body["inventory"]
    vr = await _router_current(lab, routed)
    assert [d["mac"] for d in routed.served[vr["uuid"]].applied[-1][0]["dhcp"]] == [vm["vmNics"][0]["mac"]]
    lab.crash_before(hooks, "push_l3")
    await lab.submit("StopVmInstance", uuid=vm["uuid"])
    e = await lab.restart()
    await lab.healed()

    async def pushed() -> bool:
        return routed.served[vr["uuid"]].applied[-1][0]["dhcp"] == []

    await wait_for(pushed, 20, "the stopped VM's lease to leave the router")
    assert await health.check(e.core, lab.ids["l3"]) == "ok"
    await _router_current(lab, routed)
    assert (await e.vm(vm["uuid"]))["state"] == "Stopped"


async def test_router_creation_killed_before_its_vm_started(lab: CrashLab, routed: LabRouters) -> None:
    """Killed after the router's records (VM, NICs and their IPs, ApplianceVm) were committed and before its VM
    was started: the half-made router and the user VM are rolled back (rows, IPs, capacity); the next VM start
    makes the router."""
    lab.crash_before(router, "start_on_host", when=lambda core, host, vm, *a, **kw: vm["type"] == "ApplianceVm")
    await lab.submit("CreateVmInstance", name="vm", instanceOfferingUuid=lab.ids["offering"],
                     imageUuid=lab.ids["image"], l3NetworkUuids=[lab.ids["l3"]])
    e = await lab.restart()
    await lab.healed()
    assert await e.query("QueryVirtualRouterVm") == []
    assert await e.core.db.fetchone("SELECT 1 FROM ApplianceVm") is None
    assert (await e.core.db.fetchone("SELECT COUNT(*) FROM UsedIp WHERE usedFor='VmNic'"))[0] == 0
    st, body = await e.create_vm("again")
    assert st == 200, body
    await _router_current(lab, routed)
    await lab.healed()


async def test_router_vm_defined_but_stopped_is_recreated(lab: CrashLab, routed: LabRouters) -> None:
    """The domain of a Running router went away with nobody to hear it while the controller was down: the
    restarted controller's VM sync marks it Stopped and its router recovery creates it again at once."""
    e = lab.env
    st, body = await e.create_vm("vm")
    assert st == 200, body
    vr = await _router_current(lab, routed)
    lab.die()
    agent = tcc._agent(e, vr["hostUuid"]).app[CTX]
    await agent.driver.destroy_vm(vr["uuid"], undefine=True)
    assert VmState.RUNNING not in (await agent.driver.list_vms()).get(vr["uuid"], ())
    e = await lab.restart()
    await lab.reconnect_all()

    async def recreated() -> bool:
        rows = await e.core.db.fetchall("SELECT v.uuid, v.state, a.status FROM ApplianceVm a JOIN VmInstance v ON "
                                        "v.uuid = a.uuid")
        return [(r["uuid"] != vr["uuid"], r["state"], r["status"]) for r in rows] == [(True, "Running", "Connected")]

    await wait_for(recreated, 30, "the router to be created again")
    new = await _router_current(lab, routed)
    assert [d["mac"] for d in routed.served[new["uuid"]].applied[-1][0]["dhcp"]] == [body["inventory"]["vmNics"][0]
                                                                                    ["mac"]]
    await lab.healed()


async def test_reconcile_leaves_a_router_being_created_alone(lab: CrashLab, routed: LabRouters,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A host's reconcile (a ping's VM sync, a reconnect, CheckConsistency --repair) while a router is being
    created (Starting, no domain yet) leaves it to its creation (before: rolled back as an interrupted create,
    and the user VM's start failed; found by the router re-creation at a restart racing a reconnect)."""
    from controller.compute import recovery

    e = lab.env
    reached, gate = asyncio.Event(), asyncio.Event()
    real = router.start_on_host

    async def held(core: Any, host: dict[str, Any], vm: dict[str, Any], *a: Any, **kw: Any) -> Any:
        if vm["type"] == "ApplianceVm":
            reached.set()
            await asyncio.wait_for(gate.wait(), 30)
        return await real(core, host, vm, *a, **kw)

    monkeypatch.setattr(router, "start_on_host", held)
    create = asyncio.create_task(e.create_vm("vm"))
    await asyncio.wait_for(reached.wait(), 30)
    for h in await e.core.db.fetchall("SELECT * FROM Host ORDER BY createDate"):
        host = dict(h)
        assert await recovery.reconcile_host(e.core, host, await recovery.vm_states(e.core, host)) == {}
    gate.set()
    st, body = await create
    assert st == 200, body
    await _router_current(lab, routed)
    await lab.healed()
