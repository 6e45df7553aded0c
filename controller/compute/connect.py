"""The connect sequence of a host (reference §4.3 step 3-7, DESIGN.md): run by AddKvmHost, ReconnectHost
and the ping task's auto-reconnect.

``/host/connect`` (facts → inherent host tags) → ``/host/capacity`` (totals; availability derived from the
VMs holding capacity there) → ``/host/checkbridge`` for the bridge of every L2 attached to the host's
cluster → ``/localstorage/init`` for every local primary storage attached to the cluster →
``/sharedstorage/connect`` for every shared one (NFS, SharedMountPoint) → ``/vm/vmsync``
(the tracer's full sync) → status Connected. Any failure raises; the caller decides what it means.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from controller.compute import extensions, tracer
from controller.compute.capacity import recompute
from controller.core import Controller
from controller.errors import AgentFailure, OperationError
from controller.storage import shared
from controller.storage.capacity import record_host
from controller.util import now_iso
from controller.version import PROTOCOL_LEVEL, VERSION
from kvmagent.contract import host as hc
from kvmagent.contract import storage as sc
from kvmagent.contract import vm as vc

log = logging.getLogger(__name__)
#: Written when the agent reports that live disk snapshots work on the host (1.0's tag).
LIVE_SNAPSHOT_TAG = "capability:liveSnapshot"

_SIZE = re.compile(r"(\d+)([KMGT]?)B?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``512M`` → bytes (K/M/G/T are powers of 1024; a bare number is bytes)."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M or 1G)")
    return int(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())


async def host_row(core: Controller, uuid: str) -> dict[str, Any]:
    row = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (uuid,))
    if row is None:
        raise LookupError(f"host {uuid} vanished")
    return dict(row)


def controller_url(core: Controller, host_uuid: str) -> str:
    """The controller URL the host's agent was last connected with (in memory: hosts added over SSH get it
    again from :func:`deploy`; others fall back to the configured ``public_url``)."""
    url = core.services["agents"].controller_urls.get(host_uuid) or core.config.public_url
    if not url:
        raise LookupError(f"host {host_uuid}: no controller URL known since this controller started; set "
                          "public_url in the controller config")
    return str(url)


async def set_status(core: Controller, uuid: str, status: str) -> None:
    async with core.db.write() as tx:
        await tx.update("Host", {"uuid": uuid}, {"status": status, "lastOpDate": now_iso()})


class AgentOutdated(OperationError):
    """The agent reports another release or source digest than the controller deploys."""


def agent_difference(facts: Any, digest: str) -> str | None:
    """How the agent's reported release/digest differ from this controller's (None: the same)."""
    if facts.agentVersion == VERSION and facts.agentDigest == digest:
        return None
    return (f"the agent reports release {facts.agentVersion or 'unknown'} (sources "
            f"{(facts.agentDigest or 'unknown')[:12]}), the controller deploys {VERSION} ({digest[:12]})")


async def connect(core: Controller, host_uuid: str, controller_url: str, *, current_agent: str | None = None) -> None:
    """Run the whole sequence against the host's agent and mark the host Connected. ``current_agent``: the
    digest of the agent sources this controller deploys; an agent reporting another release or digest raises
    :class:`AgentOutdated` before anything is recorded (the caller redeploys it)."""
    agents = core.services["agents"]
    agents.controller_urls[host_uuid] = controller_url
    host = await host_row(core, host_uuid)
    facts = await agents.call(host, hc.ConnectCmd(hostUuid=host_uuid, controllerUrl=controller_url))
    if current_agent is not None and (diff := agent_difference(facts, current_agent)):
        raise AgentOutdated(f"host[uuid:{host_uuid}, managementIp:{host['managementIp']}]: {diff}")
    upgrade_needed = check_protocol(host, facts)
    cap = await agents.call(host, hc.CapacityCmd())
    configs = core.services["configs"]
    reserved = parse_size(configs.get("kvm", "reservedMemory"))
    async with core.db.write() as tx:
        await _write_facts(core, tx, host_uuid, facts)
        await recompute(tx, host_uuid, cap.cpuNum * cap.cpuSpeed, cap.totalMemory, reserved)
        await tx.update("Host", {"uuid": host_uuid}, {"cpuNum": cap.cpuNum, "agentBootId": facts.bootId,
                                                      "agentVersion": facts.agentVersion,
                                                      "agentProtocol": facts.agentProtocol or 0,
                                                      "agentDigest": facts.agentDigest,
                                                      "agentUpgradeNeeded": int(upgrade_needed)})
    for bridge in await cluster_bridges(core, host["clusterUuid"]):
        try:
            await agents.call(host, hc.CheckBridgeCmd(bridgeName=bridge))
        except AgentFailure as e:
            raise AgentFailure(f"bridge {bridge} (of an L2 network attached to cluster "
                               f"{host['clusterUuid']}) is missing on host {host['managementIp']}: {e.details}",
                               cause=e.cause) from e
    for ps in await local_storages(core, host["clusterUuid"]):
        await init_local_storage(core, host, ps)
    for ps in await shared.attached(core, host["clusterUuid"]):  # NFS mounted, the same file system checked
        await shared.connect_host(core, host, ps)
    states = await agents.call(host, vc.VmSyncCmd())
    await tracer.full_sync(core, host_uuid, dict(states.states))
    await extensions.run("host.connected", core, host=host)
    await set_status(core, host_uuid, "Connected")
    # A primary storage attached while this sequence ran (after the list above was read) saw the host not yet
    # Connected and left it to us: initialise what is still missing (compute/attach.py).
    for ps in await local_storages(core, host["clusterUuid"]):
        if await core.db.fetchone("SELECT 1 FROM LocalStorageHostRef WHERE primaryStorageUuid=? AND hostUuid=?",
                                  (ps["uuid"], host_uuid)) is None:
            await init_local_storage(core, host, ps)
    for ps in await shared.attached(core, host["clusterUuid"]):
        if not await shared.connected_on(core, host_uuid, ps["uuid"]):
            await shared.connect_host(core, host, ps)


def check_protocol(host: dict[str, Any], facts: Any) -> bool:
    """The agent's protocol level against the controller's: True when it is one level behind (accepted,
    needs upgrading); OperationError when it is two or more behind or newer than the controller."""
    level = facts.agentProtocol or 0
    where = f"host[uuid:{host['uuid']}, managementIp:{host['managementIp']}]"
    if level == PROTOCOL_LEVEL:
        return False
    if level == PROTOCOL_LEVEL - 1:
        log.warning("%s: agent %s speaks protocol level %d, one behind the controller's %d: accepted; upgrade "
                    "the agent (ReconnectHost on a host added over SSH redeploys it)", where,
                    facts.agentVersion or "(unknown release)", level, PROTOCOL_LEVEL)
        return True
    if level < PROTOCOL_LEVEL:
        raise OperationError(f"{where}: the agent speaks protocol level {level} (release "
                             f"{facts.agentVersion or 'unknown'}), the controller level {PROTOCOL_LEVEL}; "
                             f"only levels {PROTOCOL_LEVEL - 1}..{PROTOCOL_LEVEL} are accepted: upgrade the "
                             "agent on that host")
    raise OperationError(f"{where}: the agent speaks protocol level {level} (release "
                         f"{facts.agentVersion or 'unknown'}), newer than the controller's level "
                         f"{PROTOCOL_LEVEL}: upgrade the controller first")


async def init_local_storage(core: Controller, host: dict[str, Any], ps: dict[str, Any]) -> None:
    """``/localstorage/init`` of ``ps`` on ``host`` and its ``LocalStorageHostRef`` (capacity) recorded."""
    reply = await core.services["agents"].call(host, sc.InitCmd(storagePath=ps["url"], primaryStorageUuid=ps["uuid"],
                                                                hostUuid=host["uuid"]))
    async with core.db.write() as tx:
        await record_host(tx, ps["uuid"], host["uuid"], reply)


async def _write_facts(core: Controller, tx: Any, host_uuid: str, facts: Any) -> None:
    tags = core.services["tags"]
    for key in ("libvirt::version", "qemu::version", "hvm", "domainType"):
        await tx.execute("DELETE FROM SystemTag WHERE resourceUuid=? AND inherent=1 AND tag LIKE ?",
                         (host_uuid, key + "::%"))
    await tx.execute("DELETE FROM SystemTag WHERE resourceUuid=? AND inherent=1 AND tag=?",
                     (host_uuid, LIVE_SNAPSHOT_TAG))
    values = {"libvirt::version": facts.libvirtVersion, "qemu::version": facts.qemuVersion,
              "hvm": facts.hvmCpuFlag, "domainType": facts.domainType}
    for key, value in values.items():
        if value:
            await tags.write(tx, "HostVO", host_uuid, f"{key}::{value}", system=True, inherent=True)
    if facts.liveSnapshot:
        await tags.write(tx, "HostVO", host_uuid, LIVE_SNAPSHOT_TAG, system=True, inherent=True)


async def cluster_bridges(core: Controller, cluster_uuid: str) -> list[str]:
    """The bridge of every L2 attached to the cluster: its ``kvm::bridge::`` tag, else 1.0's rule."""
    rows = await core.db.fetchall(
        "SELECT l2.uuid, l2.physicalInterface, l2.vlan, "
        "(SELECT tag FROM SystemTag WHERE resourceUuid = l2.uuid AND tag LIKE 'kvm::bridge::%' LIMIT 1) AS tag "
        "FROM L2Network l2 JOIN L2NetworkClusterRef r ON r.l2NetworkUuid = l2.uuid WHERE r.clusterUuid = ?",
        (cluster_uuid,))
    return sorted({l2_bridge(dict(r)) for r in rows})


def l2_bridge(l2: dict[str, Any]) -> str:
    if l2.get("tag"):
        return str(l2["tag"]).removeprefix("kvm::bridge::")
    vlan = l2.get("vlan")
    return f"br_{l2['physicalInterface']}" if vlan is None else f"br_{l2['physicalInterface']}_{vlan}"


async def local_storages(core: Controller, cluster_uuid: str) -> list[dict[str, Any]]:
    rows = await core.db.fetchall(
        "SELECT ps.* FROM PrimaryStorage ps JOIN PrimaryStorageClusterRef r ON r.primaryStorageUuid = ps.uuid "
        "WHERE r.clusterUuid = ? AND ps.type = 'LocalStorage' ORDER BY ps.createDate", (cluster_uuid,))
    return [dict(r) for r in rows]


FALLBACK_STORAGE = "/var/lib/zstack-py/volumes"


async def storage_for(core: Controller, host: dict[str, Any]) -> tuple[str, str | None]:
    """(storagePath, primary storage uuid or None) where root disks of VMs on ``host`` live."""
    ps = await local_storages(core, host["clusterUuid"])
    if ps:
        return ps[0]["url"], ps[0]["uuid"]
    for sps in await shared.attached(core, host["clusterUuid"]):  # else a shared storage the host has connected
        if sps["state"] == "Enabled" and await shared.connected_on(core, host["uuid"], sps["uuid"]):
            return shared.storage_path(sps), sps["uuid"]
    return FALLBACK_STORAGE, None
