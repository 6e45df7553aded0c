"""LocalStorageMigrateVolume and LocalStorageGetVolumeMigratableHosts (reference §3.5).

Rules (1.0; each violation changes nothing): the volume has a LocalStorageResourceRef; the destination is
not its current host and is a host of a cluster the volume's local PS is attached to (and Connected);
the volume is Ready; a data volume is detached; a root volume's VM is Stopped with no data volume attached
(SYS.1006, the others SYS.1007); the destination has the capacity of the volume and its snapshots.

Flow (guarantees): reserve capacity on the destination → the SOURCE agent streams the snapshot files, the
volume and (for a root volume) the base image when the destination cache lacks it, to the same absolute
paths on the DESTINATION agent (``/localstorage/copytoremote`` with a one-time transfer ticket of the
destination bound to these files and sizes, never the destination's token; revoked when the copy ends), an
XXH3-128 digest per file stream verified by both agents) → the copy's report checked and the files'
presence on the destination confirmed (``_verify``: no
second md5 pass over the files, unlike 1.0) → ONE transaction repoints the volume's and snapshots'
refs to the destination, returns the source capacity and sets a root volume's VM ``lastHostUuid`` → only
then the source files are deleted (failures logged). Any failure before the transaction deletes what was
copied on the destination (retried at the destination's next connect when its agent is down), releases the
reservation, and leaves the source untouched. A base image copied into the destination cache is kept (a
cache entry, shared with other volumes).
"""

from __future__ import annotations

import logging
from typing import Any

from controller.agenturl import agent_url
from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.core import Controller
from controller.errors import ApiError, InvalidArgument, OperationError
from controller.storage import capacity
from controller.storage.common import connected_host, ps_row, snapshot_rows, volume_ref
from controller.util import now_iso
from kvmagent.contract import storage as sc

log = logging.getLogger(__name__)
COPY_TIMEOUT = 24 * 3600
TICKET_IDLE = 600  # seconds a transfer ticket stays valid without use (each file's transfer uses it)
LEFTOVERS = "storage.leftovers"  # core.services key: host uuid → volume install paths to delete there


class MigrateVolumeMsg(ApiMessage):
    volumeUuid: Uuid
    destHostUuid: Uuid


class MigratableHostsMsg(ApiMessage):
    volumeUuid: Uuid


async def _check_root(ctx: ApiContext, volume: dict[str, Any]) -> None:
    vm = await ctx.db.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (volume["vmInstanceUuid"],))
    if vm is None:
        return
    if vm["state"] != "Stopped":
        raise OperationError(f"the volume[uuid:{volume['uuid']}] is the root volume of the vm[uuid:{vm['uuid']}]. "
                             f"Currently the vm is in state of {vm['state']}, please stop it before migration")
    row = await ctx.db.fetchone("SELECT COUNT(*) FROM Volume WHERE vmInstanceUuid=? AND type='Data'", (vm["uuid"],))
    if row and row[0]:
        raise OperationError(f"the volume[uuid:{volume['uuid']}] is the root volume of the vm[uuid:{vm['uuid']}]. "
                             f"Currently the vm still has {row[0]} data volumes attached, please detach them "
                             "before migration")


async def check(ctx: ApiContext, msg: MigrateVolumeMsg) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(volume, its ref, destination host) after every 1.0 rule passed."""
    volume = await ctx.require("Volume", msg.volumeUuid, "volumeUuid")
    dest = await ctx.require("Host", msg.destHostUuid, "destHostUuid")
    ref = await volume_ref(ctx.core, volume["uuid"])
    if ref is None:
        raise InvalidArgument(f"the volume[uuid:{volume['uuid']}] is not on the local storage anymore, it may "
                              "have been deleted or not instantiated yet")
    if ref["hostUuid"] == dest["uuid"]:
        raise InvalidArgument(f"the volume[uuid:{volume['uuid']}] is already on the host[uuid:{dest['uuid']}]")
    if dest["uuid"] not in {h["uuid"] for h in await capacity.ps_hosts(ctx.db, ref["primaryStorageUuid"])}:
        raise InvalidArgument(f"the dest host[uuid:{dest['uuid']}] doesn't belong to the local primary storage"
                              f"[uuid:{ref['primaryStorageUuid']}] where the volume[uuid:{volume['uuid']}] locates")
    if volume["status"] != "Ready":
        raise InvalidArgument(f"the volume[uuid:{volume['uuid']}] is not in status of Ready, cannot migrate it")
    if volume["type"] == "Data" and volume["vmInstanceUuid"]:
        raise InvalidArgument(f"the data volume[uuid:{volume['uuid']}, name: {volume['name']}] is still attached "
                              f"to the VM[uuid:{volume['vmInstanceUuid']}]. Please detach it before migration")
    if volume["type"] == "Root":
        await _check_root(ctx, volume)
    if dest["status"] != "Connected":
        raise OperationError(f"the dest host[uuid:{dest['uuid']}] is {dest['status']}, not Connected")
    return volume, ref, dest


async def _base_image(core: Controller, src: dict[str, Any], ps: dict[str, Any], volume: dict[str, Any]) -> str | None:
    """The cached image at the bottom of the volume's backing chain, if any."""
    info = await core.services["agents"].call(src, sc.VolumeInfoCmd(storagePath=ps["url"],
                                                                    installPath=volume["installPath"]))
    bottom = [p for p in info.chain if p and "/imagecache/" in p]
    return bottom[-1] if bottom else None


async def _ticket(core: Controller, src: dict[str, Any], dest: dict[str, Any], ps: dict[str, Any], paths: list[str],
                  base: str | None) -> str:
    """A one-time transfer ticket of the destination for exactly these files (sizes measured on the source;
    the base image and its cache record only when present): the source never gets the destination's token."""
    wanted = [*paths, *([base, base + ".json"] if base else [])]
    bits = await core.services["agents"].call(src, sc.CheckBitsCmd(storagePath=ps["url"], paths=wanted))
    files = [sc.TicketFileTO(path=b.path, size=int(b.size or 0)) for b in bits.bits if b.existing]
    got = await core.services["agents"].call(dest, sc.IssueTicketCmd(storagePath=ps["url"], files=files,
                                                                     idle=TICKET_IDLE, maxAge=COPY_TIMEOUT))
    return str(got.ticket)


async def _revoke(core: Controller, dest: dict[str, Any], ticket: str) -> None:
    try:
        await core.services["agents"].call(dest, sc.RevokeTicketCmd(ticket=ticket))
    except ApiError as e:  # it expires by itself after TICKET_IDLE seconds unused
        log.warning("could not revoke the transfer ticket on host %s: %s", dest["uuid"], e.details)


async def _verify(core: Controller, dest: dict[str, Any], ps: dict[str, Any], paths: list[str],
                  copied: list[sc.CopiedTO]) -> None:
    """Every path was copied with a verified checksum, and the destination has it.

    The checksum of each file is verified by the agents during the copy: the source digests its file, the
    destination digests what it wrote and refuses the file on a mismatch, and the source compares the
    destination's digest with its own. 1.0 read every file again on both hosts for an md5 after the copy
    (``getmd5`` + ``checkbits``): two more full reads that tripled the time of a migration for no stronger
    guarantee, so the controller checks the copy's report and the files' presence instead."""
    by_path = {c.path: c for c in copied}
    for p in paths:
        c = by_path.get(p)
        if c is None or not (c.checksum or c.skipped):
            raise OperationError(f"the copy of {p} to host[uuid:{dest['uuid']}] was not confirmed with a checksum "
                                 f"(reported: {c})")
    theirs = await core.services["agents"].call(dest, sc.CheckBitsCmd(storagePath=ps["url"], paths=paths))
    missing = [b.path for b in theirs.bits if not b.existing]
    if missing or len(theirs.bits) != len(paths):
        raise OperationError(f"host[uuid:{dest['uuid']}] does not have {missing or paths} after the copy")


async def _undo_copy(core: Controller, dest: dict[str, Any], ps: dict[str, Any], install_path: str) -> None:
    try:
        await core.services["agents"].call(dest, sc.DeleteVolumeCmd(storagePath=ps["url"], installPath=install_path))
    except ApiError as e:
        log.warning("could not delete the copy of %s on host %s now (%s); retrying at its next connect",
                    install_path, dest["uuid"], e.details)
        core.services.setdefault(LEFTOVERS, {}).setdefault(dest["uuid"], set()).add((ps["url"], install_path))


async def _commit(core: Controller, volume: dict[str, Any], snaps: list[dict[str, Any]], ref: dict[str, Any],
                  dest: dict[str, Any]) -> None:
    """ONE transaction: refs on dest (reserved already), source capacity returned, VM's last host."""
    async with core.db.write() as tx:
        moved = 0
        for uuid in [volume["uuid"], *(s["uuid"] for s in snaps)]:
            row = await tx.fetchone("SELECT size FROM LocalStorageResourceRef WHERE resourceUuid=?", (uuid,))
            moved += int(row[0]) if row else 0
            await tx.update("LocalStorageResourceRef", {"resourceUuid": uuid},
                            {"hostUuid": dest["uuid"], "lastOpDate": now_iso()})
        await capacity.release(tx, ref["primaryStorageUuid"], ref["hostUuid"], moved)
        if volume["type"] == "Root" and volume["vmInstanceUuid"]:
            await tx.execute("UPDATE VmInstance SET lastHostUuid=?, lastOpDate=? WHERE uuid=? AND hostUuid IS NULL",
                             (dest["uuid"], now_iso(), volume["vmInstanceUuid"]))


async def migrate(ctx: ApiContext, volume: dict[str, Any], ref: dict[str, Any], dest_row: dict[str, Any]) -> None:
    core = ctx.core
    ps = await ps_row(core, ref["primaryStorageUuid"])
    src = await connected_host(core, ref["hostUuid"])
    dest = await connected_host(core, dest_row["uuid"])
    snaps = await snapshot_rows(core, volume["uuid"])
    uuids = (volume["uuid"], *(s["uuid"] for s in snaps))
    refs = await core.db.fetchall("SELECT size FROM LocalStorageResourceRef WHERE resourceUuid IN "
                                  f"({','.join('?' * len(uuids))})", uuids)
    need = sum(int(r[0]) for r in refs)
    async with core.db.write() as tx:
        await capacity.reserve(tx, ps["uuid"], dest["uuid"], need)
    paths = [*(s["primaryStorageInstallPath"] for s in snaps), volume["installPath"]]
    try:
        base = await _base_image(core, src, ps, volume) if volume["type"] == "Root" else None
        ticket = await _ticket(core, src, dest, ps, paths, base)
        try:
            reply = await core.services["agents"].call(src, sc.CopyToRemoteCmd(
                storagePath=ps["url"], paths=paths, baseImagePath=base,
                destAgentUrl=agent_url(dest), destToken=ticket),
                timeout=COPY_TIMEOUT)
        finally:
            await _revoke(core, dest, ticket)
        await _verify(core, dest, ps, paths, reply.copied)
        await _commit(core, volume, snaps, ref, dest)
    except BaseException:
        await _undo_copy(core, dest, ps, volume["installPath"])
        async with core.db.write() as tx:
            await capacity.release(tx, ps["uuid"], dest["uuid"], need)
        raise
    try:
        await core.services["agents"].call(src, sc.DeleteVolumeCmd(storagePath=ps["url"],
                                                                   installPath=volume["installPath"]))
    except ApiError as e:
        log.error("volume %s migrated to host %s but its source files on host %s were not deleted: %s",
                  volume["uuid"], dest["uuid"], src["uuid"], e.details)


@api("LocalStorageMigrateVolume", MigrateVolumeMsg, job=True, queue=lambda m: m.volumeUuid)
async def migrate_volume(ctx: ApiContext, msg: MigrateVolumeMsg) -> dict[str, Any]:
    """Cold-migrate a volume and its snapshots to another host of the same local primary storage."""
    volume, ref, dest = await check(ctx, msg)
    await migrate(ctx, volume, ref, dest)
    return {"inventory": await ctx.inventory("LocalStorageResourceRef", volume["uuid"])}


@api("LocalStorageGetVolumeMigratableHosts", MigratableHostsMsg)
async def migratable_hosts(ctx: ApiContext, msg: MigratableHostsMsg) -> dict[str, Any]:
    """Connected hosts of the volume's local PS other than its own, with enough capacity (empty if not on LS)."""
    volume = await ctx.require("Volume", msg.volumeUuid, "volumeUuid")
    ref = await volume_ref(ctx.core, volume["uuid"])
    if ref is None:
        return {"inventories": []}
    row = await ctx.db.fetchone("SELECT COALESCE(SUM(size),0) FROM LocalStorageResourceRef WHERE resourceUuid=? OR "
                                "resourceUuid IN (SELECT uuid FROM VolumeSnapshot WHERE volumeUuid=?)",
                                (volume["uuid"], volume["uuid"]))
    need = int(row[0]) if row else 0
    out = []
    for h in await capacity.ps_hosts(ctx.db, ref["primaryStorageUuid"]):
        cap = await ctx.db.fetchone("SELECT availableCapacity FROM LocalStorageHostRef WHERE primaryStorageUuid=? "
                                    "AND hostUuid=?", (ref["primaryStorageUuid"], h["uuid"]))
        if h["uuid"] != ref["hostUuid"] and h["status"] == "Connected" and cap and cap[0] >= need:
            out.append(await ctx.inventory("Host", h["uuid"]))
    return {"inventories": out}


async def retry_leftovers(core: Controller, host: dict[str, Any]) -> None:
    """At a host's connect: delete copies a failed migration could not delete then (errors logged)."""
    pending = core.services.get(LEFTOVERS, {}).get(host["uuid"], set())
    for url, path in sorted(pending):
        live = await core.db.fetchone(
            "SELECT 1 FROM Volume v JOIN LocalStorageResourceRef r ON r.resourceUuid = v.uuid "
            "WHERE v.installPath=? AND r.hostUuid=?", (path, host["uuid"]))
        if live is not None:  # migrated here successfully since: the files are the volume's now
            pending.discard((url, path))
            continue
        try:
            await core.services["agents"].call(host, sc.DeleteVolumeCmd(storagePath=url, installPath=path))
            pending.discard((url, path))
        except ApiError as e:
            log.warning("leftover copy %s on host %s still not deleted: %s", path, host["uuid"], e.details)



class HostDiskCapacityMsg(ApiMessage):
    primaryStorageUuid: Uuid
    hostUuid: Uuid | None = None


@api("GetLocalStorageHostDiskCapacity", HostDiskCapacityMsg)
async def host_disk_capacity(ctx: ApiContext, msg: HostDiskCapacityMsg) -> dict[str, Any]:
    """Per host of a local primary storage: total/available (logical) and physical capacity."""
    await ctx.require("PrimaryStorage", msg.primaryStorageUuid, "primaryStorageUuid")
    if msg.hostUuid:
        await ctx.require("Host", msg.hostUuid, "hostUuid")
    rows = await ctx.db.fetchall(
        "SELECT hostUuid, totalCapacity, availableCapacity, totalPhysicalCapacity, availablePhysicalCapacity "
        "FROM LocalStorageHostRef WHERE primaryStorageUuid=? AND (? IS NULL OR hostUuid=?) ORDER BY createDate",
        (msg.primaryStorageUuid, msg.hostUuid, msg.hostUuid))
    return {"inventories": [dict(r) for r in rows]}
