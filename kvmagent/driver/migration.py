"""Live migration through libvirt (issue 15), used by :meth:`LibvirtDriver.migrate_vm`.

Transport: peer to peer, the source libvirtd connects to ``qemu+tcp://<dest>/system`` (the destination's
libvirtd listens on TCP 16509 on its management address, as 1.0's deployment set it up: ``listen_tcp``,
``auth_tcp = "none"``; the testbed does the same in both modes, bound to the host's address on the testbed's
private network) and the migration stream (memory and, with ``copy_storage``, the NBD disk copy) goes to
``tcp://<dest>``, so the destination's hostname need not resolve on the source. qemu+ssh was not chosen: it
would need every host to hold an SSH key that opens a root shell on every other host.

Flags: LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE, plus NON_SHARED_INC when the disks are local: the
destination already has the disk files on the same backing image (``/vm/migrate/prepare``), so libvirt mirrors
only the top layers (NON_SHARED_DISK would copy the whole backing chain into the top file); plus UNSAFE when they
are on shared storage (NFS, SharedMountPoint: the same files on both hosts, nothing copied; see :func:`flags`).

The domain XML sent to the destination (and the persistent definition it keeps) gets the destination's address
for the console listener and the metadata's host address; everything else (paths, tap names, MACs, console
password) is identical.

Progress: while ``migrateToURI3`` blocks in its thread, the job statistics (``virDomainGetJobStats``) are read
every :data:`POLL` seconds into :data:`LIVE` (memory and disk bytes processed/remaining/total); the controller
polls them through ``/vm/migrate/progress``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from kvmagent.driver.errors import HypervisorError, StateConflict
from kvmagent.driver.host import Guest, code_of
from kvmagent.driver.xml.base import to_string
from kvmagent.driver.xml.metadata import NS

log = logging.getLogger(__name__)

FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)


def dest_uris(dest_ip: str) -> tuple[str, str]:
    """(libvirt connection URI of the destination, migration stream URI). IPv6 addresses get brackets."""
    host = f"[{dest_ip}]" if ":" in dest_ip else dest_ip
    return f"qemu+tcp://{host}/system", f"tcp://{host}"


def flags(copy_storage: bool) -> int:
    """Without ``copy_storage`` every disk is on a shared primary storage the controller checked is the same file
    system on both hosts (its marker, storage/shared.py): UNSAFE, because libvirt's own check knows only a fixed
    list of network and cluster file systems and refuses any other shared mount (a SharedMountPoint)."""
    return FLAGS | (libvirt.VIR_MIGRATE_NON_SHARED_INC if copy_storage else libvirt.VIR_MIGRATE_UNSAFE)


def retarget_xml(xml: str, dest_ip: str) -> str:
    """The domain XML with the console listening on ``dest_ip`` and the metadata naming it as the host."""
    dom = ET.fromstring(xml)
    for g in dom.findall("devices/graphics"):
        if g.get("listen") is not None:
            g.set("listen", dest_ip)
        for lst in g.findall("listen"):
            if lst.get("type") == "address":
                lst.set("address", dest_ip)
    node = dom.find(f"metadata/{{{NS}}}zstack/{{{NS}}}hostManagementIp")
    if node is not None:
        node.text = dest_ip
    return to_string(dom)


def _params(guest: Guest, dest_ip: str, mig_uri: str) -> dict[str, Any]:
    secure = libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
    live = guest.dom.XMLDesc(secure)
    persistent = guest.dom.XMLDesc(secure | libvirt.VIR_DOMAIN_XML_INACTIVE)
    return {libvirt.VIR_MIGRATE_PARAM_URI: mig_uri,
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: retarget_xml(live, dest_ip),
            libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: retarget_xml(persistent, dest_ip)}


#: libvirt job statistics → the progress fields of ``/vm/migrate/progress`` (bytes; disk = the storage copy).
STAT_FIELDS = {"data_total": "dataTotal", "data_processed": "dataProcessed", "data_remaining": "dataRemaining",
               "memory_total": "memoryTotal", "memory_processed": "memoryProcessed",
               "memory_remaining": "memoryRemaining", "disk_total": "diskTotal", "disk_processed": "diskProcessed",
               "disk_remaining": "diskRemaining", "time_elapsed": "elapsedMs"}
#: Seconds between two reads of the job statistics while a migration runs.
POLL = 0.5
#: vm uuid → the latest progress of its running migration (the source agent's view).
LIVE: dict[str, dict[str, int]] = {}


def progress_from_stats(stats: dict[str, Any]) -> dict[str, int]:
    """The progress of a migration from ``virDomainGetJobStats``' fields: byte counts of memory and disk (the
    storage copy) processed, remaining and total, overall (``data_*``) and ``percent`` = done share of the data
    (total − remaining; memory re-sent because the guest dirtied it does not count twice), below 100 while the job
    runs. Absent or negative values are left out."""
    out: dict[str, int] = {}
    for key, name in STAT_FIELDS.items():
        value = stats.get(key)
        if isinstance(value, int) and value >= 0:
            out[name] = value
    total = out.get("dataTotal", 0)
    if total > 0:
        remaining = out.get("dataRemaining")
        done = total - remaining if remaining is not None else min(out.get("dataProcessed", 0), total)
        out["percent"] = max(0, min(99, done * 100 // total))
    return out


def current(vm_uuid: str) -> dict[str, int] | None:
    """The latest progress of the migration of ``vm_uuid`` running here, or None."""
    return LIVE.get(vm_uuid)


async def _watch(guest: Guest, done: threading.Event) -> None:
    """Poll the migration job's statistics into :data:`LIVE` until ``done``."""
    LIVE[guest.name] = {}
    while not done.is_set():
        try:
            stats = await asyncio.to_thread(guest.dom.jobStats)
        except libvirt.libvirtError as e:
            log.debug("job statistics of %s: %s", guest.name, e)
        else:
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_UNBOUNDED) != libvirt.VIR_DOMAIN_JOB_NONE:
                LIVE[guest.name] = progress_from_stats(stats)
        await asyncio.sleep(POLL)


def _transferred(guest: Guest) -> int | None:
    try:
        stats = guest.dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return None
    value = stats.get("data_processed")
    return int(value) if value is not None else None


async def migrate(guest: Guest, dest_ip: str, *, copy_storage: bool, timeout: float) -> tuple[float, int | None]:
    """Migrate the running ``guest`` to ``dest_ip``; (seconds, bytes transferred). After ``timeout`` seconds the
    job is aborted (the VM keeps running on the source). libvirt errors → ``VIRT.LIBVIRT_ERROR``."""
    state, _ = await guest.host.raw(guest.dom.state)
    if state != libvirt.VIR_DOMAIN_RUNNING:
        raise StateConflict(f"VM {guest.name} is not running here (libvirt state {state}); only a running VM "
                            "migrates live", vmUuid=guest.name)
    dconn, mig_uri = dest_uris(dest_ip)
    params = await guest.host.call(f"reading the definition of {guest.name}", _params, guest, dest_ip, mig_uri)
    fl = flags(copy_storage)
    done = threading.Event()
    t0 = time.monotonic()

    def run() -> None:
        try:
            guest.dom.migrateToURI3(dconn, params, fl)
        finally:
            done.set()

    # A thread of its own: the migration blocks for its whole duration, the libvirt pool stays free.
    task = asyncio.ensure_future(asyncio.to_thread(run))
    watcher = asyncio.ensure_future(_watch(guest, done))
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        log.warning("migration of %s to %s exceeded %.0f s; aborting it", guest.name, dest_ip, timeout)
        try:
            await asyncio.to_thread(guest.dom.abortJob)
        except libvirt.libvirtError as e:
            log.warning("aborting the migration job of %s: %s", guest.name, e)
        try:
            await task
        except libvirt.libvirtError:
            pass
        raise HypervisorError(f"migrating {guest.name} to {dconn}", f"timeout after {timeout:.0f} seconds; the "
                              "job was aborted") from None
    except libvirt.libvirtError as e:
        raise HypervisorError(f"migrating {guest.name} to {dconn}", str(e), libvirt_code=code_of(e)) from e
    finally:
        done.set()
        watcher.cancel()
        LIVE.pop(guest.name, None)
    elapsed = time.monotonic() - t0
    return elapsed, await asyncio.to_thread(_transferred, guest)
