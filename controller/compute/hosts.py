"""Host APIs: AddKvmHost (alias AddKVMHost), ReconnectHost, ChangeHostState, UpdateHost, DeleteHost.

Guarantees:

* AddKvmHost inserts the host (Enabled, Connecting), deploys the agent over SSH (:mod:`.deploy`) and runs
  the connect sequence (:mod:`.connect`). Any failure deletes the host row (and its tags) and fails the
  API; nothing of the host is left in the database.
* ReconnectHost reruns deploy-if-changed + connect; on failure the host is Disconnected and the API fails
  with HOST.1002. It is refused while the host is PreMaintenance/Maintenance.
* Every host API runs in the host's queue (queue key = host uuid), so connects never overlap.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
from typing import Any

from pydantic import Field

from controller import sealed, sshkeys
from controller.api.context import ApiContext
from controller.api.messages import (
    ApiMessage,
    CreateMessage,
    Description,
    Name,
    UpdateMessage,
    Uuid,
    UuidDeleteMessage,
    UuidMessage,
)
from controller.api.registry import api, by_uuid
from controller.compute import connect as conn
from controller.compute import deploy, maintenance
from controller.core import Controller
from controller.errors import ApiError, HostReconnectFailed, InvalidArgument, OperationError
from controller.util import new_uuid, now_iso
from controller.version import VERSION

log = logging.getLogger(__name__)
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*")


class AddKvmHostMsg(CreateMessage):
    managementIp: str = Field(min_length=1, max_length=255)
    username: str = Field(min_length=1, max_length=255)
    password: str = Field(min_length=1, max_length=255)
    name: Name
    clusterUuid: Uuid
    description: Description | None = None
    sshPort: int = Field(22, ge=1, le=65535)


class ChangeHostStateMsg(ApiMessage):
    uuid: Uuid
    stateEvent: str = Field(pattern="^(enable|disable|maintain)$")


class UpdateHostMsg(UpdateMessage):
    acceptHostKeyFingerprint: str | None = Field(default=None, max_length=100)
    managementIp: str | None = None


def check_management_ip(ip: str) -> None:
    try:
        ipaddress.IPv4Address(ip)
        return
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", ip) or not _HOSTNAME.fullmatch(ip):
        raise InvalidArgument(f"invalid field[managementIp]: {ip!r} is neither an IPv4 address nor a valid "
                              "hostname")


async def _insert_host(ctx: ApiContext, msg: AddKvmHostMsg) -> str:
    cluster = await ctx.require("Cluster", msg.clusterUuid, "clusterUuid")
    now = now_iso()
    uuid = msg.resourceUuid or new_uuid()
    await ctx.core.services["tags"].validate_create_tags("HostVO", msg.systemTags)
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM Host WHERE managementIp=?", (msg.managementIp,)):
            raise InvalidArgument(f"invalid field[managementIp]: there has been a host having managementIp"
                                  f"[{msg.managementIp}]")
        await tx.insert("Host", {
            "uuid": uuid, "name": msg.name, "description": msg.description, "zoneUuid": cluster["zoneUuid"],
            "clusterUuid": msg.clusterUuid, "managementIp": msg.managementIp, "hypervisorType": "KVM",
            "state": "Enabled", "status": "Connecting", "username": msg.username,
            "password": sealed.seal(ctx, msg.password),
            "sshPort": msg.sshPort, "agentPort": 7070, "agentToken": secrets.token_hex(24),
            "createDate": now, "lastOpDate": now})
        await ctx.core.services["tags"].write_create_tags(tx, "HostVO", uuid, msg.systemTags, msg.userTags)
    return uuid


async def _delete_host_row(core: Controller, uuid: str) -> None:
    async with core.db.write() as tx:
        await tx.execute("DELETE FROM Host WHERE uuid=?", (uuid,))


@api("AddKvmHost", AddKvmHostMsg, job=True, queue=lambda m: f"host-ip:{m.managementIp}",
     aliases=("AddKVMHost",))
async def add_kvm_host(ctx: ApiContext, msg: AddKvmHostMsg) -> dict[str, Any]:
    """Add a KVM host: deploy the agent over SSH and connect it; on any failure no host row remains."""
    check_management_ip(msg.managementIp)
    uuid = await _insert_host(ctx, msg)

    async def deploy_and_connect() -> None:
        host = await conn.host_row(ctx.core, uuid)
        await connect_current_agent(ctx.core, host, await deploy.deploy(ctx.core, host, new=True))

    try:  # in the host's queue too: a reconnect the new agent asks for waits until the add is done
        await ctx.core.queues.run(uuid, deploy_and_connect)
    except BaseException as e:
        await _delete_host_row(ctx.core, uuid)
        if isinstance(e, ApiError):
            raise
        raise OperationError(f"failed to add host {msg.managementIp}: {type(e).__name__}: {e}") from e
    return {"inventory": await ctx.inventory("Host", uuid)}


async def reconnect(core: Controller, uuid: str, accept: str | None = None) -> None:
    """Deploy-if-changed (hosts added over SSH) and connect; Disconnected + HOST.1002 on failure. ``accept``:
    a new SSH host-key fingerprint the administrator verified (``sshkeys``)."""
    host = await conn.host_row(core, uuid)
    try:
        await conn.set_status(core, uuid, "Connecting")
        if host["password"]:
            url = await deploy.deploy(core, host, new=False, accept=accept)
            await connect_current_agent(core, host, url)
        else:
            url = conn.controller_url(core, uuid)
            await conn.connect(core, uuid, url)
    except Exception as e:
        await conn.set_status(core, uuid, "Disconnected")
        from controller.compute.tracer import host_disconnected

        await host_disconnected(core, uuid)
        detail = e.details if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"
        raise HostReconnectFailed(f"failed to reconnect host[uuid:{uuid}, managementIp:{host['managementIp']}]: "
                                  f"{detail}") from e


async def connect_current_agent(core: Controller, host: dict[str, Any], url: str) -> None:
    """Connect a host added over SSH; when its running agent reports another release or source digest than
    this controller deploys (after a controller upgrade), redeploy it (install + restart: its VMs are
    libvirt's and keep running) and connect again, which must then see the controller's agent."""
    digest = deploy.local_digest()
    try:
        await conn.connect(core, host["uuid"], url, current_agent=digest)
        return
    except conn.AgentOutdated as e:
        log.info("%s; redeploying the agent", e.details)
    url = await deploy.deploy(core, host, new=False, force=True)
    try:
        await conn.connect(core, host["uuid"], url, current_agent=digest)
    except conn.AgentOutdated as e:
        raise OperationError(f"{e.details} even after redeploying it") from e
    log.info("host %s: agent upgraded to %s", host["uuid"], VERSION)


class ReconnectHostMsg(UuidMessage):
    #: accept a changed SSH host key whose fingerprint (SHA256:...) was verified on the host's console
    acceptHostKeyFingerprint: str | None = Field(default=None, max_length=100)


@api("ReconnectHost", ReconnectHostMsg, job=True, queue=by_uuid)
async def reconnect_host(ctx: ApiContext, msg: ReconnectHostMsg) -> dict[str, Any]:
    """Rerun deploy-if-changed and the connect sequence (HOST.1002 on failure)."""
    sshkeys.validate_fingerprint(msg.acceptHostKeyFingerprint)
    host = await ctx.require("Host", msg.uuid, "uuid")
    if host["state"] in ("PreMaintenance", "Maintenance"):
        raise OperationError(f"host[uuid:{msg.uuid}] is in state {host['state']}; reconnect is not allowed")
    await reconnect(ctx.core, msg.uuid, msg.acceptHostKeyFingerprint)
    return {"inventory": await ctx.inventory("Host", msg.uuid)}


@api("ChangeHostState", ChangeHostStateMsg, job=True, queue=by_uuid)
async def change_host_state(ctx: ApiContext, msg: ChangeHostStateMsg) -> dict[str, Any]:
    """enable → Enabled, disable → Disabled, maintain → PreMaintenance, every VM migrated away (or stopped),
    Maintenance (:mod:`controller.compute.maintenance`)."""
    await ctx.require("Host", msg.uuid, "uuid")
    state = {"enable": "Enabled", "disable": "Disabled", "maintain": "Maintenance"}[msg.stateEvent]
    if state == "Maintenance":
        await maintenance.maintain(ctx, msg.uuid)
        return {"inventory": await ctx.inventory("Host", msg.uuid)}
    async with ctx.db.write() as tx:
        await tx.update("Host", {"uuid": msg.uuid}, {"state": state, "lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("Host", msg.uuid)}


@api("UpdateHost", UpdateHostMsg, queue=by_uuid)
async def update_host(ctx: ApiContext, msg: UpdateHostMsg) -> dict[str, Any]:
    """Update name, description (and managementIp: takes effect at the next reconnect). A new managementIp of a
    host added over SSH must present the recorded SSH host key (checked now, without logging in) or the key
    whose fingerprint ``acceptHostKeyFingerprint`` names: the stored credentials never go to an unchecked
    address."""
    sshkeys.validate_fingerprint(msg.acceptHostKeyFingerprint)
    host = await ctx.require("Host", msg.uuid, "uuid")
    values = {k: v for k, v in (("name", msg.name), ("description", msg.description),
                                ("managementIp", msg.managementIp)) if v is not None}
    if msg.managementIp is not None:
        check_management_ip(msg.managementIp)
        if msg.managementIp != host["managementIp"] and host["password"]:
            values.update(await _check_new_address(host, msg.managementIp, msg.acceptHostKeyFingerprint))
    async with ctx.db.write() as tx:
        if values:
            await tx.update("Host", {"uuid": msg.uuid}, {**values, "lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("Host", msg.uuid)}


async def _check_new_address(host: Any, ip: str, accept: str | None) -> dict[str, Any]:
    seen = await sshkeys.probe(ip, int(host["sshPort"]), None if accept else host["sshHostKey"])
    if seen is None:
        raise OperationError(f"invalid field[managementIp]: no SSH server answered at {ip}:{host['sshPort']}; the "
                             "new address of a host is checked against its recorded SSH host key before it is used")
    if accept:
        sshkeys.check_accept(f"{ip}:{host['sshPort']}", seen, accept)
        return {"sshHostKey": seen.key, "sshHostKeyFingerprint": seen.fingerprint}
    if host["sshHostKey"] and seen.key != host["sshHostKey"]:
        raise sshkeys.HostKeyChanged(
            f"invalid field[managementIp]: {ip}:{host['sshPort']} presents SSH host key {seen.fingerprint}, not the "
            f"key {sshkeys.fingerprint(host['sshHostKey'])} recorded for host[uuid:{host['uuid']}]; nothing was "
            f"changed. If it is the same host reinstalled, verify the key on its console and pass "
            f"acceptHostKeyFingerprint={seen.fingerprint}")
    return {}


@api("DeleteHost", UuidDeleteMessage, job=True, queue=by_uuid)
async def delete_host(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
    """Delete a host (unknown uuid → success). Refused while VMs hold capacity on it."""
    busy = await ctx.db.fetchone("SELECT COUNT(*) FROM VmInstance WHERE hostUuid=?", (msg.uuid,))
    if busy and busy[0]:
        raise OperationError(f"host[uuid:{msg.uuid}] has {busy[0]} VM(s) on it; stop or destroy them first")
    ctx.core.tasks.cancel(f"host-reconnect:{msg.uuid}")
    await _delete_host_row(ctx.core, msg.uuid)
    return {}


async def add_connected_host(core: Controller, *, name: str, cluster_uuid: str, ip: str, port: int, token: str,
                             controller_url: str, uuid: str, tls: bool = False) -> None:
    """Register an agent that already runs (no SSH: simulated hosts, benchmarks) and connect it; the row
    is deleted when the connect sequence fails. ``tls``: the agent serves HTTPS with a certificate from this
    controller's CA (verified like a deployed agent's); False registers a plain-HTTP agent, which only this
    in-process call can do (AddKvmHost deploys with ``agent_tls``)."""
    cluster = await core.db.fetchone("SELECT zoneUuid FROM Cluster WHERE uuid=?", (cluster_uuid,))
    if cluster is None:
        raise InvalidArgument(f"invalid field[clusterUuid]: cluster {cluster_uuid} not found")
    now = now_iso()
    async with core.db.write() as tx:
        await tx.insert("Host", {
            "uuid": uuid, "name": name, "zoneUuid": cluster["zoneUuid"], "clusterUuid": cluster_uuid,
            "managementIp": ip, "agentPort": port, "agentTls": int(tls),
            "agentToken": token, "createDate": now, "lastOpDate": now})
    try:
        await conn.connect(core, uuid, controller_url)
    except BaseException:
        await _delete_host_row(core, uuid)
        raise
