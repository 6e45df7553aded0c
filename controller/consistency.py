"""Consistency check (issue 18, reliability 7): the database against every connected host.

``CheckConsistency`` (API, admin only) and ``zstack-ctl check [--repair]`` (which calls it) list each
difference as a finding: ``kind``, the resource, the host, what differs (``detail``), what to do
(``action``), whether ``--repair`` fixes it (``repairable``) and, with ``repair``, whether it was fixed.

Checked:

* per Connected host (``/vm/vmsync``, ``/flatnet/status``): domains no VM row claims (``orphanDomain``),
  VMs the database places on the host with another state there (``vmState``: a Running VM without a
  domain, a domain Paused, ...), VMs running on another host than recorded (``vmHost``), VMs left in a
  transitional state with no operation under way (``stuckTransition``), flat DHCP entries and user data
  served for NICs that are not there or missing for NICs that are (``dhcpEntry``, ``userdata``); a host
  that does not answer (``hostUnreachable``);
* in the database: IPs held for no NIC (``leakedIp``), one address given to two NICs or a NIC whose
  address has no allocation (``doubleIp``), host CPU/memory availability against the VMs holding it
  (``hostCapacity``), local-storage availability against the volumes and snapshots holding it
  (``localStorageCapacity``).

Safe repairs (``repair=True``): VM state and host from what the host runs (the tracer's own rules),
transitional VMs through crash recovery, leaked IPs returned, capacities derived again from their holders,
flat entries pushed again from the database (a rebuild of the host). Orphan domains and double IPs are
only reported: a person decides.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage
from controller.api.registry import api
from controller.compute import recovery, tracer
from controller.compute.connect import parse_size
from controller.compute.statemachine import INTERMEDIATE
from controller.core import Controller
from controller.errors import ApiError, PermissionDenied
from controller.flatnet_provider.hooks import cluster_uses_flat, rebuild_host
from controller.flatnet_provider.specs import flat_services
from controller.identity import ADMIN_UUID
from controller.storage.capacity import sync_ps
from controller.util import now_iso
from kvmagent.contract.flatnet import FlatStatusCmd

log = logging.getLogger(__name__)
_LIVE_DOMAIN = ("Running", "Paused", "Unknown", "Crashed")


@dataclass
class Finding:
    kind: str
    resource: str
    detail: str
    action: str
    host: str | None = None
    repairable: bool = False
    repaired: bool = False


class CheckConsistencyMsg(ApiMessage):
    repair: bool = False


class Checker:
    def __init__(self, core: Controller, repair: bool) -> None:
        self.core = core
        self.repair = repair
        self.findings: list[Finding] = []

    def add(self, f: Finding) -> Finding:
        self.findings.append(f)
        return f

    async def run(self) -> list[Finding]:
        hosts = [dict(r) for r in await self.core.db.fetchall("SELECT * FROM Host WHERE status='Connected' "
                                                               "ORDER BY createDate")]
        await asyncio.gather(*(self.host(h) for h in hosts))
        await self.ips()
        await self.host_capacity()
        await self.local_storage()
        return self.findings

    # ------------------------------------------------------------ hosts
    async def host(self, host: dict[str, Any]) -> None:
        try:
            states = await recovery.vm_states(self.core, host)
        except (ApiError, TimeoutError) as e:
            self.add(Finding("hostUnreachable", f"host[uuid:{host['uuid']}]", f"the agent did not answer "
                             f"/vm/vmsync: {getattr(e, 'details', e)}", "check the host and its agent; the ping "
                             "task marks it Disconnected after host/ping.maxFailure failures", host["uuid"]))
            return
        for uuid in await recovery.orphan_domains(self.core, host["uuid"], states):
            self.add(Finding("orphanDomain", f"domain[uuid:{uuid}]", f"domain {states[uuid]} on the host and no "
                             "VM record claims it (its IP may be handed out again)",
                             f"destroy it (virsh destroy {uuid}) or set global config vm/orphanDomain.destroy=true "
                             "and reconnect the host", host["uuid"]))
        rows = await self.core.db.fetchall(
            f"SELECT uuid, state, hostUuid FROM VmInstance WHERE hostUuid=? OR uuid IN ({','.join('?' * len(states))})",
            (host["uuid"], *states))
        for r in rows:
            await self.vm(host, dict(r), states.get(r["uuid"]))
        await self.flat(host)

    async def vm(self, host: dict[str, Any], vm: dict[str, Any], domain: str | None) -> None:
        uuid, state = vm["uuid"], vm["state"]
        res = f"vm[uuid:{uuid}]"
        if state in ("Destroyed", "Expunging"):
            return  # an orphan domain, reported above
        if vm["hostUuid"] != host["uuid"]:
            if domain == "Running" and state not in INTERMEDIATE:
                f = self.add(Finding("vmHost", res, f"runs on this host but the database places it on host "
                             f"{vm['hostUuid']} ({state})", "the VM sync moves it here (repairable)", host["uuid"],
                             repairable=True))
                if self.repair:
                    f.repaired = bool(await tracer.apply_report(self.core, host["uuid"], uuid, "Running"))
            return
        if state in recovery.TRANSITIONAL:
            if self.core.queues.is_busy(uuid):
                return  # an operation runs on it now
            f = self.add(Finding("stuckTransition", res, f"{state} with no operation under way (domain: "
                         f"{domain or 'none'})", "crash recovery finishes or rolls it back (repairable; also "
                         "done at controller start and host reconnect)", host["uuid"], repairable=True))
            if self.repair:
                f.repaired = bool(await self.core.queues.run(uuid, lambda: recovery.reconcile_vm(
                    self.core, host, uuid, domain)))
            return
        want = tracer.AGENT_TO_VM.get(domain or "Stopped", "Unknown")
        if want != state:
            f = self.add(Finding("vmState", res, f"{state} in the database, {domain or 'no domain'} on the host",
                                 f"the VM sync sets it {want} (repairable)", host["uuid"], repairable=True))
            if self.repair:
                f.repaired = bool(await tracer.apply_report(self.core, host["uuid"], uuid, domain or "Stopped"))

    async def flat(self, host: dict[str, Any]) -> None:
        """DHCP entries and user data the host serves against the NICs of its Running/Unknown VMs (hosts of a
        cluster with no L3 using the Flat provider serve none)."""
        want, want_ud = await self._flat_wanted(host["uuid"])
        if not want and not want_ud and not await cluster_uses_flat(self.core, host["clusterUuid"]):
            return
        try:
            st = await self.core.services["agents"].call(host, FlatStatusCmd(), timeout=30)
        except ApiError as e:
            self.add(Finding("hostUnreachable", f"host[uuid:{host['uuid']}]", f"/flatnet/status failed: "
                             f"{e.details}", "check the agent's log", host["uuid"]))
            return
        served = {(l3.l3NetworkUuid, x.mac): x.ip for l3 in st.l3s for x in l3.entries}
        userdata = {(l3.l3NetworkUuid, vm) for l3 in st.l3s for vm in l3.userdataVms}
        action = "rebuild the host's flat network (repairable; ReconnectHost does it too)"
        bad: list[Finding] = []
        for key in sorted(set(want) | set(served)):
            if want.get(key) != served.get(key):
                detail = (f"the database gives {want.get(key) or 'no Running VM of this host'}; the host's DHCP "
                          f"serves {served.get(key) or 'nothing'}")
                bad.append(Finding("dhcpEntry", f"nic[l3:{key[0]}, mac:{key[1]}]", detail, action, host["uuid"],
                                   repairable=True))
        for key in sorted(want_ud ^ userdata):
            what = "not served" if key in want_ud else "served for a VM not Running on this host"
            bad.append(Finding("userdata", f"vm[uuid:{key[1]}]", f"user data on L3 {key[0]} {what}", action,
                               host["uuid"], repairable=True))
        self.findings.extend(bad)
        if bad and self.repair:
            try:
                await rebuild_host(self.core, host)
            except ApiError as e:
                log.warning("flat rebuild of host %s failed: %s", host["uuid"], e.details)
                return
            for f in bad:
                f.repaired = True

    async def _flat_wanted(self, host_uuid: str) -> tuple[dict[tuple[str, str], str], set[tuple[str, str]]]:
        rows = await self.core.db.fetchall(
            "SELECT n.vmInstanceUuid, n.l3NetworkUuid, n.mac, n.ip FROM VmNic n JOIN VmInstance v ON "
            "v.uuid = n.vmInstanceUuid WHERE v.hostUuid=? AND v.state IN ('Running', 'Unknown') AND "
            "v.type='UserVm' AND n.l3NetworkUuid IS NOT NULL", (host_uuid,))
        want: dict[tuple[str, str], str] = {}
        want_ud: set[tuple[str, str]] = set()
        for r in rows:
            services = await flat_services(self.core, r["l3NetworkUuid"])
            if "DHCP" in services and r["ip"]:
                want[(r["l3NetworkUuid"], r["mac"])] = r["ip"]
            if "Userdata" in services:
                want_ud.add((r["l3NetworkUuid"], r["vmInstanceUuid"]))
        return want, want_ud

    # ------------------------------------------------------------ database
    async def ips(self) -> None:
        for r in await self.core.db.fetchall(
                "SELECT u.uuid, u.ip, u.l3NetworkUuid FROM UsedIp u WHERE u.usedFor='VmNic' AND u.uuid NOT IN "
                "(SELECT usedIpUuid FROM VmNic WHERE usedIpUuid IS NOT NULL)"):
            self.add(Finding("leakedIp", f"ip[{r['ip']}, l3:{r['l3NetworkUuid']}]", "allocated for a VM NIC that "
                             "no NIC holds", "return it to the range (repairable)", repairable=True))
        for r in await self.core.db.fetchall(
                "SELECT l3NetworkUuid, ip, COUNT(*) AS n, GROUP_CONCAT(vmInstanceUuid) AS vms FROM VmNic WHERE ip IS "
                "NOT NULL GROUP BY l3NetworkUuid, ip HAVING n > 1"):
            self.add(Finding("doubleIp", f"ip[{r['ip']}, l3:{r['l3NetworkUuid']}]", f"held by {r['n']} NICs (vms "
                             f"{r['vms']})", "stop one of the VMs and give it another address (SetVmStaticIp or "
                             "detach/attach its NIC)"))
        for r in await self.core.db.fetchall(
                "SELECT n.vmInstanceUuid, n.ip, n.l3NetworkUuid FROM VmNic n WHERE n.ip IS NOT NULL AND "
                "(n.usedIpUuid IS NULL OR n.usedIpUuid NOT IN (SELECT uuid FROM UsedIp))"):
            self.add(Finding("doubleIp", f"ip[{r['ip']}, l3:{r['l3NetworkUuid']}]", f"NIC of vm "
                             f"{r['vmInstanceUuid']} has an address with no allocation: it can be handed out again",
                             "stop and start the VM (it gets an allocated address)"))
        if self.repair and any(f.kind == "leakedIp" for f in self.findings):
            async with self.core.db.write() as tx:
                await recovery.release_leaked_ips(tx)
            for f in self.findings:
                if f.kind == "leakedIp":
                    f.repaired = True

    async def host_capacity(self) -> None:
        reserved = parse_size(self.core.services["configs"].get("kvm", "reservedMemory"))
        rows = await self.core.db.fetchall(
            "SELECT h.uuid, h.totalCpuCapacity, h.availableCpuCapacity, h.totalMemoryCapacity, "
            "h.availableMemoryCapacity, COALESCE(SUM(v.cpuNum * v.cpuSpeed), 0) AS cpu, "
            "COALESCE(SUM(v.memorySize), 0) AS mem FROM Host h LEFT JOIN VmInstance v ON v.hostUuid = h.uuid "
            "WHERE h.totalCpuCapacity IS NOT NULL GROUP BY h.uuid")
        for r in rows:
            cpu = int(r["totalCpuCapacity"]) - int(r["cpu"])
            mem = max(0, int(r["totalMemoryCapacity"]) - reserved) - int(r["mem"])
            if (cpu, mem) == (r["availableCpuCapacity"], r["availableMemoryCapacity"]):
                continue
            f = self.add(Finding("hostCapacity", f"host[uuid:{r['uuid']}]", f"available {r['availableCpuCapacity']}"
                                 f" MHz / {r['availableMemoryCapacity']} B, the VMs holding it leave {cpu} MHz / "
                                 f"{mem} B", "derive it again from the VMs (repairable)", r["uuid"], repairable=True))
            if self.repair:
                async with self.core.db.write() as tx:
                    await tx.execute(
                        "UPDATE Host SET availableCpuCapacity = totalCpuCapacity - (SELECT COALESCE(SUM(cpuNum * "
                        "cpuSpeed), 0) FROM VmInstance WHERE hostUuid = ?), availableMemoryCapacity = MAX(0, "
                        "totalMemoryCapacity - ?) - (SELECT COALESCE(SUM(memorySize), 0) FROM VmInstance WHERE "
                        "hostUuid = ?), lastOpDate = ? WHERE uuid = ?",
                        (r["uuid"], reserved, r["uuid"], now_iso(), r["uuid"]))
                f.repaired = True

    async def local_storage(self) -> None:
        migrating = await self.core.db.fetchone("SELECT 1 FROM Job WHERE state='Processing' AND apiName="
                                                "'LocalStorageMigrateVolume'")
        rows = await self.core.db.fetchall(
            "SELECT h.primaryStorageUuid, h.hostUuid, h.availableCapacity, h.totalCapacity - COALESCE((SELECT "
            "SUM(r.size) FROM LocalStorageResourceRef r WHERE r.primaryStorageUuid = h.primaryStorageUuid AND "
            "r.hostUuid = h.hostUuid), 0) AS want FROM LocalStorageHostRef h")
        for r in rows:
            if int(r["want"]) == int(r["availableCapacity"] or 0):
                continue
            if migrating:
                continue  # a running volume migration holds a reservation without a ref
            f = self.add(Finding("localStorageCapacity", f"primaryStorage[uuid:{r['primaryStorageUuid']}]",
                                 f"available {r['availableCapacity']} B on host {r['hostUuid']}, the volumes and "
                                 f"snapshots there leave {r['want']} B", "derive it again from its resources "
                                 "(repairable)", r["hostUuid"], repairable=True))
            if self.repair:
                async with self.core.db.write() as tx:
                    await tx.execute("UPDATE LocalStorageHostRef SET availableCapacity=?, lastOpDate=? WHERE "
                                     "primaryStorageUuid=? AND hostUuid=?",
                                     (int(r["want"]), now_iso(), r["primaryStorageUuid"], r["hostUuid"]))
                    await sync_ps(tx, r["primaryStorageUuid"])
                f.repaired = True


async def check(core: Controller, *, repair: bool = False) -> list[Finding]:
    return await Checker(core, repair).run()


@api("CheckConsistency", CheckConsistencyMsg, job=True)
async def check_consistency(ctx: ApiContext, msg: CheckConsistencyMsg) -> dict[str, Any]:
    """Compare the database with every Connected host (admin only); ``repair`` fixes the safe differences."""
    if ctx.session is None or ctx.session.accountUuid != ADMIN_UUID:
        raise PermissionDenied("CheckConsistency is an admin operation; log in as the admin account")
    findings = await check(ctx.core, repair=msg.repair)
    return {"findings": [asdict(f) for f in findings], "consistent": not findings}
