"""Live disk snapshots: switch a running domain's disk to a new active layer (libvirt external snapshot).

``switch_disk_top`` is the hypervisor step of ``storage.snapshots.create_live``: the storage side made an
empty qcow2 overlay whose backing file is (a name of) the disk's current image; libvirt's
``snapshotCreateXML`` with DISK_ONLY | REUSE_EXT | NO_METADATA | ATOMIC makes QEMU open that overlay and
put it on top of the current image (which becomes read-only backing). Every other disk (the CD-ROM too)
is ``snapshot='no'``. No libvirt snapshot object is kept (NO_METADATA).

libvirt also rewrites the persistent definition to the new file with an explicit ``<backingStore>`` chain
of the names it knew. Those names are not the files' names any more after the storage side finished (the
volume path names the new top), and libvirt would use that chain as given on the next start: the
definition's disk is therefore set back to the source it had before, without ``<backingStore>`` (libvirt
then probes the chain from the image headers, which are right).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from kvmagent.contract.base import AgentError
from kvmagent.driver.errors import HypervisorError, StateConflict
from kvmagent.driver.events_map import ACTIVE
from kvmagent.driver.host import NO_SUPPORT, Guest, code_of
from kvmagent.driver.xml import edit
from kvmagent.driver.xml.base import to_string

FLAGS = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
         | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)


class LiveSnapshotUnsupported(AgentError):
    """The hypervisor backend cannot switch a running disk to a new layer (501 ``VM.LIVE_SNAPSHOT_UNSUPPORTED``)."""

    def __init__(self, vm_uuid: str, reason: str) -> None:
        super().__init__("VM.LIVE_SNAPSHOT_UNSUPPORTED",
                         f"live snapshots of VM {vm_uuid} are not supported on this host ({reason}); stop the VM "
                         "and take an offline snapshot", status=501, details={"vmUuid": vm_uuid})


def snapshot_xml(dom: ET.Element, target: str, new_top: str) -> str:
    """``<domainsnapshot>``: ``target`` external onto ``new_top`` (reused), every other disk ``no``."""
    disks = ET.Element("disks")
    for d in dom.findall("devices/disk"):
        dev = d.find("target")
        name = dev.get("dev", "") if dev is not None else ""
        if name == target:
            disk = ET.SubElement(disks, "disk", {"name": name, "snapshot": "external", "type": "file"})
            ET.SubElement(disk, "driver", {"type": "qcow2"})
            ET.SubElement(disk, "source", {"file": new_top})
        elif name:
            ET.SubElement(disks, "disk", {"name": name, "snapshot": "no"})
    root = ET.Element("domainsnapshot")
    root.append(disks)
    return to_string(root)


def _disk(dom: ET.Element, vm_uuid: str, volume_uuid: str) -> tuple[str, str]:
    """``(target dev, source file)`` of the disk with serial ``volume_uuid``; 404 when not attached."""
    disk = edit.disk_element(dom, volume_uuid)
    if disk is None:
        raise AgentError("VM.DISK_NOT_FOUND", f"VM {vm_uuid} has no disk with serial (volume uuid) {volume_uuid}",
                         status=404, details={"field": "volumeUuid", "value": volume_uuid})
    target, src = disk.find("target"), disk.find("source")
    return (target.get("dev", "") if target is not None else "", src.get("file", "") if src is not None else "")


def _backing_source(dom: ET.Element, volume_uuid: str) -> str | None:
    disk = edit.disk_element(dom, volume_uuid)
    src = disk.find("backingStore/source") if disk is not None else None
    return src.get("file") if src is not None else None


def definition_with_source(xml: str, volume_uuid: str, path: str) -> str | None:
    """The persistent definition with the disk's source set to ``path`` and no ``<backingStore>``; None when
    it is like that already."""
    dom = edit.parse(xml)
    disk = edit.disk_element(dom, volume_uuid)
    src = disk.find("source") if disk is not None else None
    if disk is None or src is None:
        return None
    stale = disk.findall("backingStore")
    if src.get("file") == path and not stale:
        return None
    src.set("file", path)
    for b in stale:
        disk.remove(b)
    return to_string(dom)


async def switch_disk_top(guest: Guest, volume_uuid: str, new_top: str) -> None:
    """Make ``new_top`` the active layer of the running domain's disk ``volume_uuid`` (its serial), the
    current image its backing. Idempotent (already the active layer: success). Not running: StateConflict.
    Backend without external disk snapshots: :class:`LiveSnapshotUnsupported`, nothing changed (ATOMIC).
    Verified afterwards from the live definition (source ``new_top``, backed by the previous source)."""
    if await guest.state() not in ACTIVE:
        raise StateConflict(f"VM {guest.name} is not running; take an offline snapshot", vmUuid=guest.name)
    live = edit.parse(await guest.xml())
    target, before = _disk(live, guest.name, volume_uuid)
    if before == new_top:
        return
    persistent_src = _disk(edit.parse(await guest.xml(inactive=True)), guest.name, volume_uuid)[1]
    try:
        await guest.host.raw(guest.dom.snapshotCreateXML, snapshot_xml(live, target, new_top), FLAGS)
    except libvirt.libvirtError as e:
        if code_of(e) in NO_SUPPORT:
            raise LiveSnapshotUnsupported(guest.name, str(e)) from e
        raise HypervisorError(f"live snapshot of {volume_uuid} on {guest.name}", str(e),
                              libvirt_code=code_of(e)) from e
    after = edit.parse(await guest.xml())
    now, backing = _disk(after, guest.name, volume_uuid)[1], _backing_source(after, volume_uuid)
    if now != new_top or backing != before:
        raise HypervisorError(f"live snapshot of {volume_uuid} on {guest.name}",
                              f"the disk is {now!r} backed by {backing!r} afterwards, not {new_top!r} on {before!r}")
    fixed = definition_with_source(await guest.xml(inactive=True), volume_uuid, persistent_src)
    if fixed is not None:
        await guest.host.define(fixed)
