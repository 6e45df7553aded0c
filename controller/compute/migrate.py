"""MigrateVm and GetVmMigrationCandidateHosts (issue 15; 1.0's rules, reference nfs-migration.md §B.1-§B.5).

Rules (each refusal changes nothing): the VM is Running (409 VM.1010); it has no ISO attached and its volumes have
no snapshots (409 SYS.1006: their files would have to travel too); a receiving host is another host than the
VM's, Connected and Enabled, of the same hypervisor type, in a cluster to which every L2 network of the VM's L3
networks and every primary storage holding one of its volumes is attached, with the VM's CPU and memory free (and,
on local storage, the volumes' size free on that host), whose agent (like the source's: 409 SYS.1006 otherwise)
speaks protocol level ``MIGRATION_LEVEL`` or above (an agent one level behind is still connected, but has no
migration endpoints); with ``kvm/vm.cpuMode`` host-model or host-passthrough,
only a host whose CPU model is the source's. An explicit ``hostUuid`` that breaks a rule is refused naming the
field, the value, why, and what is allowed (400 SYS.1007 for the VM's own host, 409 HOST_ALLOCATION.1000 else);
without ``hostUuid`` a random candidate is taken. GetVmMigrationCandidateHosts is the dry run: the hosts that pass
(an empty list when none does).

Beyond 1.0 (which refused it): VMs on local primary storage migrate live with their disks. The destination's
image cache gets the base image from the source (the agent-to-agent copy of LocalStorageMigrateVolume, with a
one-time ticket, skipped when it is there already), the destination agent creates each volume's top file on the
same backing at the same path, and libvirt copies the top layers while the guest runs (NON_SHARED_INC).
On shared storage (NFS, SharedMountPoint; the receiving host must have it connected) nothing is copied: the disks
are the same files at the same paths on both hosts, snapshots included, and no storage capacity moves.

Flow (the VM's queue): one transaction reserves CPU/memory (and local storage) on the destination and sets the
VM ``Migrating`` → base images, disk files, then the ``vm.before_start`` extensions on the destination (flat
DHCP entry, user data, anti-spoofing, security groups: what a start does there, minus the domain) → the source
agent migrates → ONE transaction: the VM on the destination (``hostUuid``, ``lastHostUuid``, cluster, zone),
Running, CPU/memory returned on the source (capacity moves exactly once), the local-storage refs repointed and
their capacity returned on the source → ``vm.stopped`` extensions on the source (its DHCP entry, metadata and
per-NIC rules go) and the source's disk files deleted (failures logged). A failure asks both agents where the VM
runs: still on the source → VM Running there, destination reservations returned, files created on the destination
deleted, its extensions undone, any domain left there destroyed (409/502 with the cause); only on the
destination (the reply was lost) → committed as a success; nowhere → Unknown on the source, nothing deleted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.agenturl import agent_url
from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.compute import extensions, iso
from controller.compute import statemachine as sm
from controller.compute.capacity import move_vm, release, reserve, vm_cpu
from controller.core import Controller
from controller.errors import ApiError, InvalidArgument, OperationError, StateConflict
from controller.storage import capacity as scap
from controller.storage import shared
from controller.util import now_iso
from kvmagent.contract import host as hc
from kvmagent.contract import migrate as mc
from kvmagent.contract import storage as sc
from kvmagent.contract import vm as vc
from kvmagent.contract.version import MIGRATION_LEVEL, PROTOCOL_LEVEL

log = logging.getLogger(__name__)

NO_HOST = "HOST_ALLOCATION.1000"
MIGRATE_FAILED = "HOST.1009"
#: Seconds the source agent lets libvirt migrate before it aborts the job (TCG guests on busy hosts are slow).
TIMEOUT = 900.0
COPY_TIMEOUT = 24 * 3600
TICKET_IDLE = 600
#: Seconds between two reads of a running migration's progress on the source agent.
PROGRESS_POLL = 1.0
CPU_MODES_NEEDING_SAME_MODEL = ("host-model", "host-passthrough")
ALLOWED_HOSTS = ("a Connected and Enabled host other than the vm's current host, in a cluster attached to every L2 "
                 "network of the vm's L3 networks and every primary storage holding its volumes, with enough free "
                 "CPU and memory (and local storage)")


class MigrateVmMsg(ApiMessage):
    vmInstanceUuid: Uuid
    hostUuid: Uuid | None = None


class GetVmMigrationCandidateHostsMsg(ApiMessage):
    vmInstanceUuid: Uuid


@dataclass
class Disk:
    """One volume of the VM on a local primary storage: its top file travels."""

    volume: dict[str, Any]
    ps: dict[str, Any]
    size: int  # virtual size
    ref_size: int  # bytes accounted in LocalStorageResourceRef
    backing: str | None
    backing_format: Literal["qcow2", "raw"] = "qcow2"


@dataclass
class Plan:
    vm: dict[str, Any]
    src: dict[str, Any]
    l3s: list[str]
    ps_uuids: set[str]
    disks: list[Disk] = field(default_factory=list)

    @property
    def local_need(self) -> dict[str, int]:
        need: dict[str, int] = {}
        for d in self.disks:
            need[d.ps["uuid"]] = need.get(d.ps["uuid"], 0) + d.ref_size
        return need


def _level(host: dict[str, Any]) -> int:
    """The protocol level the host's agent reported at its last connect (absent: 0)."""
    return int(host.get("agentProtocol") or 0)


async def _plan(core: Controller, vm: dict[str, Any]) -> Plan:
    """The VM's migration plan after the VM-level rules passed (ISO, snapshots, volumes on a primary storage)."""
    uuid = vm["uuid"]
    src_row = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (vm["hostUuid"],))
    if src_row is None:
        raise OperationError(f"vm[uuid:{uuid}] has no host; only a Running vm can migrate")
    src = dict(src_row)
    if (level := _level(src)) < MIGRATION_LEVEL:
        raise OperationError(f"unable to live migrate vm[uuid:{uuid}]: its host[uuid:{src['uuid']}, managementIp:"
                             f"{src['managementIp']}] runs an agent of protocol level {level}, live migration needs "
                             f"level {MIGRATION_LEVEL} on both hosts (the controller's is {PROTOCOL_LEVEL}); upgrade "
                             "the agent on that host (ReconnectHost redeploys a host added over SSH)")
    if await iso.attached_iso(core, uuid):
        raise OperationError(f"unable to live migrate vm[uuid:{uuid}]: an ISO is attached (its file is in the "
                             "source host's image cache); detach it first (DetachIsoFromVmInstance)")
    l3s = [r[0] for r in await core.db.fetchall("SELECT l3NetworkUuid FROM VmNic WHERE vmInstanceUuid=? AND "
                                                 "l3NetworkUuid IS NOT NULL", (uuid,))]
    vols = [dict(r) for r in await core.db.fetchall(
        "SELECT * FROM Volume WHERE vmInstanceUuid=? AND status='Ready' AND installPath IS NOT NULL "
        "ORDER BY type DESC, deviceId", (uuid,))]
    plan = Plan(vm, src, l3s, set())
    for v in vols:
        snaps = await core.db.fetchone("SELECT COUNT(*) FROM VolumeSnapshot WHERE volumeUuid=?", (v["uuid"],))
        if snaps and snaps[0] and not await shared.is_shared(core.db, v["primaryStorageUuid"]):
            raise OperationError(f"unable to live migrate vm[uuid:{uuid}]: its volume[uuid:{v['uuid']}] has "
                                 f"{snaps[0]} snapshot(s), which are not migrated; delete them, or stop the vm and "
                                 "use LocalStorageMigrateVolume")
        if not v["primaryStorageUuid"]:
            raise OperationError(f"unable to live migrate vm[uuid:{uuid}]: its volume[uuid:{v['uuid']}] is on no "
                                 "primary storage (the host's fallback directory); attach a primary storage to "
                                 "the cluster")
        plan.ps_uuids.add(v["primaryStorageUuid"])
        ref = await core.db.fetchone("SELECT * FROM LocalStorageResourceRef WHERE resourceUuid=?", (v["uuid"],))
        if ref is None:
            continue  # shared storage: nothing travels
        ps = await core.db.fetchone("SELECT * FROM PrimaryStorage WHERE uuid=?", (v["primaryStorageUuid"],))
        if ps is None:
            raise OperationError(f"primary storage[uuid:{v['primaryStorageUuid']}] of volume[uuid:{v['uuid']}] is gone")
        plan.disks.append(Disk(v, dict(ps), 0, int(ref["size"]), None))
    return plan


async def _inspect_disks(core: Controller, plan: Plan) -> None:
    """Virtual size and backing file of each travelling volume, read on the source."""
    agents = core.services["agents"]
    for d in plan.disks:
        info = await agents.call(plan.src, sc.VolumeInfoCmd(storagePath=d.ps["url"],
                                                            installPath=d.volume["installPath"]))
        d.size = int(info.size)
        d.backing = info.backingFile or None
        if d.backing:
            if "/imagecache/" not in d.backing or len([p for p in info.chain if p]) > 2:
                raise OperationError(f"unable to live migrate vm[uuid:{plan.vm['uuid']}]: volume[uuid:"
                                     f"{d.volume['uuid']}] has the backing chain {info.chain}; only a file on an "
                                     "image of the image cache migrates live")
            base = await agents.call(plan.src, sc.VolumeInfoCmd(storagePath=d.ps["url"], installPath=d.backing))
            if base.format == "qcow2":
                d.backing_format = "qcow2"
            elif base.format == "raw":
                d.backing_format = "raw"
            else:
                raise OperationError(f"backing image {d.backing} has format {base.format}; allowed: qcow2, raw")


async def _reasons(core: Controller, plan: Plan, hosts: list[dict[str, Any]]) -> dict[str, str]:
    """host uuid → why it cannot receive the VM (hosts absent from the result can)."""
    vm, src = plan.vm, plan.src
    cpu, mem = vm_cpu(vm), int(vm["memorySize"])
    out: dict[str, str] = {}
    for h in hosts:
        cluster = h["clusterUuid"]
        if h["uuid"] == src["uuid"]:
            out[h["uuid"]] = "it is the host the vm runs on"
        elif h["status"] != "Connected" or h["state"] != "Enabled":
            out[h["uuid"]] = f"it is {h['status']} and {h['state']}, not Connected and Enabled"
        elif _level(h) < MIGRATION_LEVEL:
            out[h["uuid"]] = (f"its agent (managementIp:{h['managementIp']}) speaks protocol level {_level(h)}, live "
                              f"migration needs level {MIGRATION_LEVEL} (the controller's is {PROTOCOL_LEVEL}): "
                              "upgrade the agent on that host")
        elif h["hypervisorType"] != src["hypervisorType"]:
            out[h["uuid"]] = f"its hypervisor is {h['hypervisorType']}, not {src['hypervisorType']}"
        elif missing := [l3 for l3 in dict.fromkeys(plan.l3s) if not await core.db.fetchone(
                "SELECT 1 FROM L3Network l3 JOIN L2NetworkClusterRef r ON r.l2NetworkUuid = l3.l2NetworkUuid "
                "WHERE l3.uuid=? AND r.clusterUuid=?", (l3, cluster))]:
            out[h["uuid"]] = f"its cluster[uuid:{cluster}] has not the L2 network of L3 networks {missing} attached"
        elif missing := [ps for ps in sorted(plan.ps_uuids) if not await core.db.fetchone(
                "SELECT 1 FROM PrimaryStorageClusterRef WHERE primaryStorageUuid=? AND clusterUuid=?", (ps, cluster))]:
            out[h["uuid"]] = (f"its cluster[uuid:{cluster}] has not the primary storage {missing} holding the vm's "
                              "volumes attached")
        elif int(h["availableCpuCapacity"]) < cpu or int(h["availableMemoryCapacity"]) < mem:
            out[h["uuid"]] = (f"it has {h['availableCpuCapacity']} MHz CPU and {h['availableMemoryCapacity']} bytes "
                              f"of memory free, the vm needs {cpu} MHz and {mem} bytes")
        elif missing := [ps for ps in sorted(plan.ps_uuids) if await shared.is_shared(core.db, ps)
                         and not await shared.connected_on(core, h["uuid"], ps)]:
            # shared storage: no disk copy, but the host must have it mounted (reconnect the host)
            out[h["uuid"]] = f"it has not the shared primary storage {missing} holding the vm's volumes connected"
        else:
            for ps, need in plan.local_need.items():
                row = await core.db.fetchone("SELECT availableCapacity FROM LocalStorageHostRef WHERE "
                                             "primaryStorageUuid=? AND hostUuid=?", (ps, h["uuid"]))
                if row is None or int(row[0]) < need:
                    out[h["uuid"]] = (f"its local storage of primary storage[uuid:{ps}] has "
                                      f"{row[0] if row else 0} bytes free, the vm's volumes need {need}")
                    break
    return out


async def _cpu_reasons(core: Controller, plan: Plan, hosts: list[dict[str, Any]]) -> dict[str, str]:
    """With kvm/vm.cpuMode host-model or host-passthrough, hosts whose CPU model differs from the source's."""
    mode = core.services["configs"].get("kvm", "vm.cpuMode")
    if mode not in CPU_MODES_NEEDING_SAME_MODEL or not hosts:
        return {}
    agents = core.services["agents"]
    mine = (await agents.call(plan.src, hc.FactsCmd())).cpuModel
    out = {}
    for h in hosts:
        try:
            theirs = (await agents.call(h, hc.FactsCmd())).cpuModel
        except ApiError as e:
            out[h["uuid"]] = f"its CPU model cannot be read ({e.details})"
            continue
        if theirs != mine:
            out[h["uuid"]] = (f"its CPU model {theirs!r} is not the source's {mine!r} (kvm/vm.cpuMode={mode} "
                              "passes the host CPU to the guest: live migration needs the same CPU model)")
    return out


async def candidates(core: Controller, plan: Plan) -> tuple[list[dict[str, Any]], dict[str, str]]:
    hosts = [dict(r) for r in await core.db.fetchall("SELECT * FROM Host ORDER BY createDate")]
    why = await _reasons(core, plan, hosts)
    ok = [h for h in hosts if h["uuid"] not in why]
    why.update(await _cpu_reasons(core, plan, ok))
    return [h for h in ok if h["uuid"] not in why], why


async def _check(ctx: ApiContext, vm_uuid: str, api_name: str) -> Plan:
    vm = await ctx.require("VmInstance", vm_uuid, "vmInstanceUuid")
    sm.check_allowed(vm_uuid, vm["state"], api_name)
    return await _plan(ctx.core, vm)


@api("GetVmMigrationCandidateHosts", GetVmMigrationCandidateHostsMsg)
async def get_candidates(ctx: ApiContext, msg: GetVmMigrationCandidateHostsMsg) -> dict[str, Any]:
    """The hosts a Running VM can live-migrate to now (empty when none)."""
    plan = await _check(ctx, msg.vmInstanceUuid, "GetVmMigrationCandidateHosts")
    ok, _ = await candidates(ctx.core, plan)
    return {"inventories": [await ctx.inventory("Host", h["uuid"]) for h in ok]}


async def _choose(ctx: ApiContext, plan: Plan, host_uuid: str | None) -> dict[str, Any]:
    vm_uuid = plan.vm["uuid"]
    if host_uuid:
        dest = await ctx.require("Host", host_uuid, "hostUuid")
        if dest["uuid"] == plan.src["uuid"]:
            raise InvalidArgument(f"invalid field[hostUuid]: value {host_uuid} is the host vm[uuid:{vm_uuid}] runs "
                                  f"on; allowed: {ALLOWED_HOSTS}")
        why = await _reasons(ctx.core, plan, [dest])
        why = why or await _cpu_reasons(ctx.core, plan, [dest])
        if why:
            raise OperationError(f"invalid field[hostUuid]: host[uuid:{host_uuid}] cannot receive vm[uuid:{vm_uuid}]"
                                 f": {why[host_uuid]}; allowed: {ALLOWED_HOSTS}", code=NO_HOST)
        return dest
    ok, why = await candidates(ctx.core, plan)
    if not ok:
        detail = "; ".join(f"host[uuid:{h}]: {r}" for h, r in why.items()) or "there is no host"
        raise OperationError(f"no host can receive vm[uuid:{vm_uuid}] ({detail}); allowed: {ALLOWED_HOSTS}",
                             code=NO_HOST)
    return random.choice(ok)


@api("MigrateVm", MigrateVmMsg, job=True, queue=lambda m: m.vmInstanceUuid)
async def migrate_vm(ctx: ApiContext, msg: MigrateVmMsg) -> dict[str, Any]:
    """Live-migrate a Running VM to ``hostUuid`` (or a host chosen among the candidates), with its local disks."""
    plan = await _check(ctx, msg.vmInstanceUuid, "MigrateVm")
    dest = await _choose(ctx, plan, msg.hostUuid)
    await _inspect_disks(ctx.core, plan)
    await Migration(ctx.core, plan, dest).run()
    return {"inventory": await ctx.inventory("VmInstance", msg.vmInstanceUuid)}


async def migration_target(core: Controller, vm_uuid: str) -> dict[str, Any]:
    """The host MigrateVm without ``hostUuid`` would choose for the VM now (a dry run: the same rules and
    errors; nothing changes)."""
    ctx = ApiContext(core, "MigrateVm")
    return await _choose(ctx, await _check(ctx, vm_uuid, "MigrateVm"), None)


async def migrate_away(core: Controller, vm_uuid: str) -> dict[str, Any]:
    """MigrateVm without ``hostUuid`` for host maintenance (the caller holds the VM's queue); the VM's new host."""
    ctx = ApiContext(core, "MigrateVm")
    plan = await _check(ctx, vm_uuid, "MigrateVm")
    dest = await _choose(ctx, plan, None)
    await _inspect_disks(core, plan)
    await Migration(core, plan, dest).run()
    return dest


class Migration:
    """One migration's steps and their undo (see the module docstring)."""

    def __init__(self, core: Controller, plan: Plan, dest: dict[str, Any]) -> None:
        self.core = core
        self.plan = plan
        self.vm = plan.vm
        self.src = plan.src
        self.dest = dest
        self.agents = core.services["agents"]
        self.created: list[tuple[str, str]] = []  # (storage url, path) created on the destination
        self.cpu, self.mem = vm_cpu(self.vm), int(self.vm["memorySize"])

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.core.jobs.forget(self.vm["uuid"])

    def _report(self, stage: str, progress: dict[str, Any] | None = None) -> None:
        self.core.jobs.report(self.vm["uuid"], {"vmInstanceUuid": self.vm["uuid"], "stage": stage,
                                                "hostUuid": self.src["uuid"], "destHostUuid": self.dest["uuid"],
                                                **(progress or {})})

    async def _poll_progress(self) -> None:
        """The source agent's view of the running libvirt job, every :data:`PROGRESS_POLL` seconds."""
        while True:
            await asyncio.sleep(PROGRESS_POLL)
            try:
                reply = await self.agents.call(self.src, mc.MigrationProgressCmd(uuid=self.vm["uuid"]), timeout=15)
            except ApiError as e:
                log.debug("progress of the migration of vm %s: %s", self.vm["uuid"], e.details)
                continue
            if reply.running:
                self._report("migrating", reply.model_dump(exclude={"running"}, exclude_none=True))

    async def _run(self) -> None:
        self._report("preparing")
        await self._reserve()
        try:
            await self._prepare()
            await extensions.run("vm.before_start", self.core, host=self.dest, vm=self.vm)
            self._report("migrating")
            poller = asyncio.create_task(self._poll_progress())
            try:
                reply = await self.agents.call(self.src, mc.MigrateVmCmd(
                    uuid=self.vm["uuid"], destHostIp=self.dest["managementIp"], copyStorage=bool(self.plan.disks),
                    timeout=TIMEOUT), timeout=TIMEOUT + 120)
            finally:
                poller.cancel()
            done = reply.dataTransferred or 0
            self._report("migrated", {"percent": 100, "dataTotal": done, "dataProcessed": done, "dataRemaining": 0})
            log.info("vm %s migrated from host %s to host %s in %.1f s (%s bytes)", self.vm["uuid"],
                     self.src["uuid"], self.dest["uuid"], reply.elapsed, reply.dataTransferred)
        except BaseException as e:
            where = await self._where()
            if where != "dest":
                await self._rollback(where)
                await self._done()
                if isinstance(e, ApiError):
                    raise ApiError(f"failed to migrate vm[uuid:{self.vm['uuid']}] from host[uuid:{self.src['uuid']}"
                                   f", ip:{self.src['managementIp']}] to host[uuid:{self.dest['uuid']}, ip:"
                                   f"{self.dest['managementIp']}]: {e.details}; the vm "
                                   f"{'still runs on the source host' if where == 'source' else 'is Unknown'}",
                                   code=MIGRATE_FAILED, status=e.status if e.status < 500 else 502,
                                   cause=e.body()["error"]) from e
                raise
            log.warning("migration of vm %s reported %r but the vm runs on the destination host %s: committed",
                        self.vm["uuid"], e, self.dest["uuid"])
        await self._done()
        await self._commit()
        await extensions.run_quietly("vm.stopped", self.core, host_uuid=self.src["uuid"], vm=self.vm)
        await self._delete_source_files()

    # -- steps -----------------------------------------------------------------------------------------
    async def _reserve(self) -> None:
        async with self.core.db.write() as tx:
            row = await tx.fetchone("SELECT state, hostUuid FROM VmInstance WHERE uuid=?", (self.vm["uuid"],))
            if row is None or row["state"] != "Running" or row["hostUuid"] != self.src["uuid"]:
                raise StateConflict(f"vm[uuid:{self.vm['uuid']}] changed while the migration was being planned "
                                    f"(now {row['state'] if row else 'gone'}); try again")
            if not await reserve(tx, self.dest["uuid"], self.cpu, self.mem):
                raise OperationError(f"host[uuid:{self.dest['uuid']}] has not enough capacity for vm[uuid:"
                                     f"{self.vm['uuid']}] (needs {self.cpu} MHz CPU and {self.mem} bytes of memory)",
                                     code=NO_HOST)
            for ps, need in self.plan.local_need.items():
                await scap.reserve(tx, ps, self.dest["uuid"], need)
            await tx.update("VmInstance", {"uuid": self.vm["uuid"]},
                            {"state": sm.next_state("Running", "migrating"), "lastOpDate": now_iso()})

    async def _prepare(self) -> None:
        by_ps: dict[str, list[Disk]] = {}
        for d in self.plan.disks:
            by_ps.setdefault(d.ps["url"], []).append(d)
        for url, disks in by_ps.items():
            for base in dict.fromkeys(d.backing for d in disks if d.backing):
                await self._copy_base(url, base)
        if not by_ps:
            await self.agents.call(self.dest, mc.PrepareMigrationCmd(uuid=self.vm["uuid"], storagePath=None,
                                                                     expectSeconds=TIMEOUT + 300))
        for url, disks in by_ps.items():
            reply = await self.agents.call(self.dest, mc.PrepareMigrationCmd(
                uuid=self.vm["uuid"], storagePath=url, expectSeconds=TIMEOUT + 300,
                disks=[mc.MigrationDiskTO(path=d.volume["installPath"], size=d.size, backingFile=d.backing,
                                          backingFormat=d.backing_format) for d in disks]), timeout=600)
            self.created += [(url, p) for p in reply.created]

    async def _copy_base(self, url: str, base: str) -> None:
        """The base image into the destination's cache, agent to agent (kept there: a cache entry)."""
        there = await self.agents.call(self.dest, sc.CheckBitsCmd(storagePath=url, paths=[base]))
        if all(b.existing for b in there.bits):
            return
        bits = await self.agents.call(self.src, sc.CheckBitsCmd(storagePath=url, paths=[base, base + ".json"]))
        files = [sc.TicketFileTO(path=b.path, size=int(b.size or 0)) for b in bits.bits if b.existing]
        if base not in {f.path for f in files}:
            raise OperationError(f"the base image {base} of vm[uuid:{self.vm['uuid']}] is missing on its host"
                                 f"[uuid:{self.src['uuid']}]")
        got = await self.agents.call(self.dest, sc.IssueTicketCmd(storagePath=url, files=files, idle=TICKET_IDLE,
                                                                  maxAge=COPY_TIMEOUT))
        try:
            await self.agents.call(self.src, sc.CopyToRemoteCmd(
                storagePath=url, paths=[f.path for f in files],
                destAgentUrl=agent_url(self.dest), destToken=got.ticket),
                timeout=COPY_TIMEOUT)
        finally:
            try:
                await self.agents.call(self.dest, sc.RevokeTicketCmd(ticket=got.ticket))
            except ApiError as e:
                log.warning("could not revoke the transfer ticket on host %s: %s", self.dest["uuid"], e.details)
        there = await self.agents.call(self.dest, sc.CheckBitsCmd(storagePath=url, paths=[base]))
        if not all(b.existing for b in there.bits):
            raise OperationError(f"host[uuid:{self.dest['uuid']}] does not have the base image {base} after the copy")

    async def _states(self, host: dict[str, Any]) -> str | None:
        try:
            reply = await self.agents.call(host, vc.CheckVmStateCmd(vmUuids=[self.vm["uuid"]]), timeout=60)
        except ApiError as e:
            log.warning("cannot read the state of vm %s on host %s: %s", self.vm["uuid"], host["uuid"], e.details)
            return None
        return str(reply.states.get(self.vm["uuid"], "Stopped"))

    async def _where(self) -> str:
        """Where the VM runs after a failed step: ``source``, ``dest`` or ``unknown``."""
        src = await self._states(self.src)
        if src in ("Running", "Paused"):
            return "source"
        dest = await self._states(self.dest)
        return "dest" if dest == "Running" else "unknown"

    async def _rollback(self, where: str) -> None:
        uuid = self.vm["uuid"]
        if where == "source":
            if await self._states(self.dest) not in ("Stopped", None):
                try:  # a domain the failed migration left on the destination (the source's one is the live one)
                    await self.agents.call(self.dest, vc.DestroyVmCmd(uuid=uuid))
                except ApiError as e:
                    log.warning("could not destroy the leftover domain of vm %s on host %s: %s", uuid,
                                self.dest["uuid"], e.details)
            for url, path in self.created:
                try:
                    await self.agents.call(self.dest, sc.DeleteVolumeCmd(storagePath=url, installPath=path))
                except ApiError as e:
                    log.warning("could not delete %s on host %s after a failed migration: %s", path,
                                self.dest["uuid"], e.details)
        else:
            log.error("vm %s runs neither on host %s nor on host %s after a failed migration; set Unknown, no file "
                      "deleted", uuid, self.src["uuid"], self.dest["uuid"])
        await extensions.run_quietly("vm.start_failed", self.core, host=self.dest, vm=self.vm)
        async with self.core.db.write() as tx:
            await release(tx, self.dest["uuid"], self.cpu, self.mem)
            for ps, need in self.plan.local_need.items():
                await scap.release(tx, ps, self.dest["uuid"], need)
            event = "running" if where == "source" else "unknown"
            await tx.execute("UPDATE VmInstance SET state=?, lastOpDate=? WHERE uuid=? AND state='Migrating'",
                             (sm.next_state("Migrating", event), now_iso(), uuid))

    async def _done(self) -> None:
        try:
            await self.agents.call(self.dest, mc.MigrationDoneCmd(uuid=self.vm["uuid"]), timeout=60)
        except ApiError as e:
            log.info("host %s did not take the end of the migration of vm %s: %s", self.dest["uuid"],
                     self.vm["uuid"], e.details)

    async def _commit(self) -> None:
        uuid, src, dest = self.vm["uuid"], self.src["uuid"], self.dest["uuid"]
        async with self.core.db.write() as tx:
            await release(tx, dest, self.cpu, self.mem)  # the reservation becomes the VM's own hold below
            if not await move_vm(tx, uuid, expect_host=src, host=dest, state=sm.next_state("Migrating", "migrated"),
                                 force=True):
                raise OperationError(f"vm[uuid:{uuid}] left host[uuid:{src}] during its migration")
            await tx.update("VmInstance", {"uuid": uuid}, {"clusterUuid": self.dest["clusterUuid"],
                                                            "zoneUuid": self.dest["zoneUuid"]})
            for d in self.plan.disks:
                await tx.update("LocalStorageResourceRef", {"resourceUuid": d.volume["uuid"]},
                                {"hostUuid": dest, "lastOpDate": now_iso()})
            for ps, need in self.plan.local_need.items():
                await scap.release(tx, ps, src, need)

    async def _delete_source_files(self) -> None:
        for d in self.plan.disks:
            try:
                await self.agents.call(self.src, sc.DeleteVolumeCmd(storagePath=d.ps["url"],
                                                                    installPath=d.volume["installPath"]))
            except ApiError as e:
                log.error("vm %s migrated to host %s but the file %s on host %s was not deleted: %s",
                          self.vm["uuid"], self.dest["uuid"], d.volume["installPath"], self.src["uuid"], e.details)


async def find_migrated(core: Controller, vm: dict[str, Any]) -> dict[str, Any] | None:
    """The Connected host (other than the VM's) whose domain of ``vm`` runs, for a VM left ``Migrating`` by a
    controller that died during the migration and no longer running on its source (crash recovery)."""
    rows = await core.db.fetchall("SELECT * FROM Host WHERE status='Connected' AND uuid != ? AND zoneUuid = ?",
                                  (vm["hostUuid"], vm["zoneUuid"]))
    for row in rows:
        host = dict(row)
        try:
            reply = await core.services["agents"].call(host, vc.CheckVmStateCmd(vmUuids=[vm["uuid"]]), timeout=30)
        except ApiError as e:
            log.warning("recovery: host %s did not say whether vm %s runs there: %s", host["uuid"], vm["uuid"],
                        e.details)
            continue
        if reply.states.get(vm["uuid"]) == "Running":
            return host
    return None


async def end_expectations(core: Controller, vm: dict[str, Any]) -> None:
    """A VM left ``Migrating`` by a dead controller stays on its source (the migration never moved it): every other
    Connected host of its zone is told the migration ended, so the destination's agent (prepared, unknown here)
    stops muting the VM's events (crash recovery; a host that expects nothing ignores it)."""
    rows = await core.db.fetchall("SELECT * FROM Host WHERE status='Connected' AND uuid != ? AND zoneUuid = ?",
                                  (vm["hostUuid"], vm["zoneUuid"]))
    for row in rows:
        host = dict(row)
        if _level(host) < MIGRATION_LEVEL:
            continue
        try:
            await core.services["agents"].call(host, mc.MigrationDoneCmd(uuid=vm["uuid"]), timeout=30)
        except ApiError as e:
            log.info("recovery: host %s did not take the end of the migration of vm %s: %s", host["uuid"],
                     vm["uuid"], e.details)


async def adopt_migrated(core: Controller, vm: dict[str, Any], dest: dict[str, Any]) -> None:
    """Commit a migration whose controller died after libvirt moved the VM: the VM on ``dest`` (capacity moved
    once, cluster/zone, local-storage refs and capacity of both hosts), the destination agent told the migration
    ended (it reports the VM's events again), the source's flat entries and disk files removed. The
    destination's flat entries were set up before the migration started."""
    uuid, src = vm["uuid"], vm["hostUuid"]
    async with core.db.write() as tx:
        if not await move_vm(tx, uuid, expect_host=src, host=dest["uuid"],
                             state=sm.next_state("Migrating", "migrated"), force=True):
            raise OperationError(f"vm[uuid:{uuid}] left host[uuid:{src}] while its migration was being recovered")
        await tx.update("VmInstance", {"uuid": uuid}, {"clusterUuid": dest["clusterUuid"],
                                                        "zoneUuid": dest["zoneUuid"]})
        files = [dict(r) for r in await tx.fetchall(
            "SELECT v.installPath, r.primaryStorageUuid, r.size, p.url FROM Volume v JOIN LocalStorageResourceRef r "
            "ON r.resourceUuid = v.uuid JOIN PrimaryStorage p ON p.uuid = r.primaryStorageUuid "
            "WHERE v.vmInstanceUuid = ? AND r.hostUuid = ?", (uuid, src))]
        await tx.execute("UPDATE LocalStorageResourceRef SET hostUuid=?, lastOpDate=? WHERE hostUuid=? AND "
                         "resourceUuid IN (SELECT uuid FROM Volume WHERE vmInstanceUuid=?)",
                         (dest["uuid"], now_iso(), src, uuid))
        for ps in {f["primaryStorageUuid"] for f in files}:
            for host_uuid, sign in ((src, 1), (dest["uuid"], -1)):
                need = sum(int(f["size"] or 0) for f in files if f["primaryStorageUuid"] == ps)
                await tx.execute("UPDATE LocalStorageHostRef SET availableCapacity = availableCapacity + ?, "
                                 "lastOpDate=? WHERE primaryStorageUuid=? AND hostUuid=?",
                                 (sign * need, now_iso(), ps, host_uuid))
            await scap.sync_ps(tx, ps)
    try:  # the destination agent mutes the VM's events while it expects the migration: it has ended
        await core.services["agents"].call(dest, mc.MigrationDoneCmd(uuid=uuid), timeout=60)
    except ApiError as e:
        log.warning("recovery: host %s did not take the end of the migration of vm %s: %s", dest["uuid"], uuid,
                    e.details)
    await extensions.run_quietly("vm.stopped", core, host_uuid=src, vm=vm)
    src_host = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (src,))
    for f in files:
        try:
            if src_host is None:
                raise OperationError(f"host[uuid:{src}] is gone")
            await core.services["agents"].call(dict(src_host), sc.DeleteVolumeCmd(storagePath=f["url"],
                                                                                   installPath=f["installPath"]))
        except ApiError as e:
            log.error("recovery: vm %s runs on host %s but the file %s left on host %s was not deleted: %s", uuid,
                      dest["uuid"], f["installPath"], src, e.details)
