"""Who tells a host what to serve (reference §3.2 "push only", §3.3), through the compute extension points.

* ``vm.before_start``: apply the VM's DhcpInfo (setting up its L3s) and then its user data on the target host,
  before the domain starts; a failure fails the start. ``vm.start_failed`` / ``vm.stopped``: release there.
* ``vm.state_changed`` (tracer, out of band): Stopped → release on the old host; Running on another host →
  release on the old host, apply on the new one; Running on the same host → apply (idempotent).
* ``host.connected``: one ``/flatnet/dhcp/apply`` with ``rebuild=true`` carrying every NIC of the VMs on the
  host (Running/Unknown, or Starting/Rebooting/Stopping/Migrating there; their L3s), then
  ``/flatnet/userdata/apply`` per VM (user data is not part of a rebuild). Sent whenever the host's cluster has
  an L3 using the Flat provider, so stale state is cleared too.
* Tags ``userdata::``/``sshkey::``/``rootPassword::``/``hostname::`` created, updated or deleted on a Running VM:
  pushed to its host at once (a failure is logged: the tag change is committed and the next start/reconnect
  applies it). ``tag-advice`` adds :func:`userdata_warnings` to the reply of the tag APIs.
* Attaching Flat DHCP to an L3 allocates its DHCP server IP right away (when it has a range).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from controller.api.context import ApiContext
from controller.compute import extensions
from controller.compute.connect import host_row
from controller.core import Controller, on_start
from controller.errors import OperationError
from controller.flatnet_provider import settings
from controller.flatnet_provider.dhcpserver import ensure_dhcp_ip
from controller.flatnet_provider.specs import VmPlan, flat_services, vm_plan
from controller.resources.network_service import listen_services_changed
from kvmagent.contract.flatnet import (
    FlatDhcpApplyCmd,
    FlatDhcpReleaseCmd,
    FlatL3,
    FlatNicRef,
    FlatUserdataReleaseCmd,
)
from zsutil.userdata import decode_minified, userdata_warnings

log = logging.getLogger(__name__)

TIMEOUT = 120.0
PUSHED_TAG_KEYS = ("userdata", "sshkey", "rootPassword", "hostname")


async def _call(core: Controller, host: dict[str, Any], cmd: Any) -> Any:
    return await core.services["agents"].call(host, cmd, timeout=TIMEOUT)


async def apply_plan(core: Controller, host: dict[str, Any], plan: VmPlan) -> None:
    """DHCP first (it sets up the L3 namespaces the metadata needs), then user data."""
    if plan.empty:
        return
    await _call(core, host, FlatDhcpApplyCmd(l3s=list(plan.l3s.values()), nics=plan.nics))
    if plan.userdata is not None:
        await _call(core, host, plan.userdata)


async def release_vm(core: Controller, host: dict[str, Any], vm: dict[str, Any]) -> None:
    """Stop serving the VM on ``host``: its NICs on L3s with Flat services, and its metadata."""
    rows = await core.db.fetchall("SELECT l3NetworkUuid, mac FROM VmNic WHERE vmInstanceUuid=? AND "
                                  "l3NetworkUuid IS NOT NULL", (vm["uuid"],))
    refs = [FlatNicRef(l3NetworkUuid=r[0], mac=r[1]) for r in rows if await flat_services(core, r[0])]
    if not refs:
        return
    await _call(core, host, FlatDhcpReleaseCmd(nics=refs))
    await _call(core, host, FlatUserdataReleaseCmd(vmUuid=vm["uuid"]))


async def _before_start(core: Controller, *, host: dict[str, Any], vm: dict[str, Any]) -> None:
    await apply_plan(core, host, await vm_plan(core, vm))


async def _start_failed(core: Controller, *, host: dict[str, Any], vm: dict[str, Any]) -> None:
    await release_vm(core, host, vm)


async def _stopped(core: Controller, *, host_uuid: str, vm: dict[str, Any]) -> None:
    await release_vm(core, await host_row(core, host_uuid), vm)


async def _state_changed(core: Controller, *, vm_uuid: str, before: str, after: str, old_host: str | None,
                         new_host: str | None) -> None:
    row = await core.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (vm_uuid,))
    if row is None:
        return
    vm = dict(row)
    if old_host and (after == "Stopped" or (after == "Running" and new_host and new_host != old_host)):
        await release_vm(core, await host_row(core, old_host), vm)
    if after == "Running" and new_host:
        await apply_plan(core, await host_row(core, new_host), await vm_plan(core, vm))


async def _nic_attached(core: Controller, *, host: dict[str, Any], vm: dict[str, Any], nic: dict[str, Any]) -> None:
    """A NIC added to a Running VM: its DHCP entry (and the L3's namespace) before the hot-plug."""
    await apply_plan(core, host, await vm_plan(core, vm))


async def _nic_detached(core: Controller, *, host: dict[str, Any], vm: dict[str, Any], nic: dict[str, Any]) -> None:
    """A NIC removed from a Running VM: its DHCP entry released; the VM's user data follows its (maybe new)
    default L3."""
    if nic.get("l3NetworkUuid") and await flat_services(core, nic["l3NetworkUuid"]):
        await _call(core, host, FlatDhcpReleaseCmd(nics=[FlatNicRef(l3NetworkUuid=nic["l3NetworkUuid"],
                                                                    mac=nic["mac"])]))
    plan = await vm_plan(core, vm)
    if plan.userdata is None:
        await _call(core, host, FlatUserdataReleaseCmd(vmUuid=vm["uuid"]))
    await apply_plan(core, host, plan)


async def cluster_uses_flat(core: Controller, cluster_uuid: str) -> bool:
    row = await core.db.fetchone(
        "SELECT 1 FROM NetworkServiceL3NetworkRef r JOIN NetworkServiceProvider p ON p.uuid = "
        "r.networkServiceProviderUuid JOIN L3Network l3 ON l3.uuid = r.l3NetworkUuid JOIN L2NetworkClusterRef c "
        "ON c.l2NetworkUuid = l3.l2NetworkUuid WHERE p.type='Flat' AND c.clusterUuid=? LIMIT 1", (cluster_uuid,))
    return row is not None


#: VM states whose domain runs (or is being started, rebooted, stopped or migrated away) on the VM's host. A
#: rebuild that left out a VM in the middle of an operation removed its DHCP entry and user data (and its L3's
#: namespace when it was the host's only VM there) and nothing put them back: a guest rebooted while its host
#: reconnected got its lease, then no metadata (its SSH key was never installed).
ON_HOST = ("Running", "Unknown", "Starting", "Rebooting", "Stopping", "Migrating")
SETTLED = ("Running", "Unknown")


async def rebuild_host(core: Controller, host: dict[str, Any]) -> None:
    """Replace the host's flat state by the controller's: every NIC of the VMs on it (:data:`ON_HOST`) + user
    data. A VM that was in the middle of an operation and has left the host (or stopped) by the time the
    rebuild reached the host is released again, so its operation's own release is not undone."""
    marks = ", ".join("?" * len(ON_HOST))
    rows = await core.db.fetchall(f"SELECT * FROM VmInstance WHERE hostUuid=? AND state IN ({marks}) "
                                  "AND type='UserVm' ORDER BY createDate", (host["uuid"], *ON_HOST))
    cache: dict[str, FlatL3] = {}
    plans = [await vm_plan(core, dict(r), cache) for r in rows]
    plans = [p for p in plans if not p.empty]
    if not plans and not await cluster_uses_flat(core, host["clusterUuid"]):
        return
    t0 = time.monotonic()
    await _call(core, host, FlatDhcpApplyCmd(l3s=list(cache.values()), nics=[n for p in plans for n in p.nics],
                                             rebuild=True))
    for p in plans:
        if p.userdata is not None:
            await _call(core, host, p.userdata)
    for r in rows:
        if r["state"] in SETTLED:
            continue
        now = await core.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (r["uuid"],))
        if now is None or now["hostUuid"] != host["uuid"] or now["state"] not in ON_HOST:
            await release_vm(core, host, dict(r))
    log.info("flat network rebuilt on host %s: %d L3(s), %d VM(s) in %.3f s", host["uuid"], len(cache),
             len(plans), time.monotonic() - t0)


async def _host_connected(core: Controller, *, host: dict[str, Any]) -> None:
    await rebuild_host(core, host)


def _listener(core: Controller) -> Any:
    async def on_tag(event: str, resource_type: str, resource_uuid: str, tag: str) -> None:
        row = await core.db.fetchone("SELECT * FROM VmInstance WHERE uuid=? AND state='Running' AND hostUuid IS "
                                     "NOT NULL", (resource_uuid,))
        if row is None:
            return
        vm = dict(row)
        try:
            await apply_plan(core, await host_row(core, vm["hostUuid"]), await vm_plan(core, vm))
        except Exception as e:
            log.warning("%s of tag %r on vm %s not pushed to its host (applied at its next start or host "
                        "reconnect): %s", event, tag.split("::")[0], vm["uuid"], e)
    return on_tag


def tag_advice(tag: str) -> list[str]:
    """Warnings for the tag APIs' reply: why cloud-init would not apply a ``userdata::`` value."""
    if not tag.startswith("userdata::"):
        return []
    return userdata_warnings(decode_minified(tag.removeprefix("userdata::")))


async def _services_changed(ctx: ApiContext, l3_uuid: str) -> None:
    if "DHCP" not in await flat_services(ctx.core, l3_uuid):
        return
    try:
        await ensure_dhcp_ip(ctx.core, l3_uuid)
    except OperationError as e:  # no range yet: allocated at first use
        log.info("DHCP server IP of L3 network %s not allocated yet: %s", l3_uuid, e)


@on_start(40, "flatnet-provider")
async def _bootstrap(core: Controller) -> None:
    tags = core.services["tags"]
    on_tag = _listener(core)
    for key in PUSHED_TAG_KEYS:
        tags.listen(key, on_tag)
    core.services["tag-advice"] = tag_advice


settings.register()
extensions.register_many(vm_before_start=_before_start, vm_start_failed=_start_failed, vm_stopped=_stopped,
                         vm_state_changed=_state_changed, host_connected=_host_connected,
                         vm_nic_attached=_nic_attached, vm_nic_detached=_nic_detached)
listen_services_changed(_services_changed)
