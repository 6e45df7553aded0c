"""Live device changes: CD-ROM media, data disks and NICs.

Running domains get ``LIVE|CONFIG``; defined-but-stopped ones ``CONFIG``. A live disk detach is finished only
when the guest released the disk (libvirt's DEVICE_REMOVED event), with the unplug repeated a few times;
a guest that never releases it fails the detach (``VM.DETACH_TIMEOUT``), the disk still attached.
Backends without device update
(libvirt's test driver answers "not supported") get the change in the persistent definition instead,
which is what a real host does for a stopped VM.
"""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET

import libvirt

from kvmagent.contract.base import AgentError
from kvmagent.driver.errors import HypervisorError
from kvmagent.driver.events_map import ACTIVE
from kvmagent.driver.host import NO_SUPPORT, Guest, code_of
from kvmagent.driver.spec import DiskSpec, IsoSpec, NicSpec
from kvmagent.driver.xml import edit
from kvmagent.driver.xml.disk import Cdrom, Disk
from kvmagent.driver.xml.interface import BridgeInterface

log = logging.getLogger(__name__)
CDROM_WAIT_S = 30.0


async def _flags(guest: Guest) -> int:
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE if await guest.state() in ACTIVE else 0
    return libvirt.VIR_DOMAIN_AFFECT_CONFIG | live


async def change_cdrom(guest: Guest, iso: IsoSpec | None, *, poll: float = 0.2) -> None:
    """Insert or eject; returns once the live definition shows the wanted medium (≤ 30 s)."""
    want = iso.path if iso else None
    live = edit.cdrom_source(edit.parse(await guest.xml()))
    persistent = edit.cdrom_source(edit.parse(await guest.xml(inactive=True)))
    if live == want and persistent == want:
        return
    dev = edit.element_string(Cdrom(want).element())
    # Forced (the tray opens even if the guest locked it): an eject, and an insert into an empty drive (no
    # medium to take from under the guest; its firmware may hold the empty drive's tray locked for a while).
    force = want is None or live is None
    flags = await _flags(guest) | (libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE if force else 0)
    try:
        await _update_cdrom(guest, dev, flags)
    except libvirt.libvirtError as e:
        if code_of(e) in NO_SUPPORT:
            new = edit.replace_cdrom(await guest.xml(inactive=True), Cdrom(want).element())
            await guest.host.define(new)
            return
        if "locked" in str(e) or "eject" in str(e):
            raise AgentError("VM.ISO_LOCKED", f"It seems the ISO is still mounted in VM {guest.name}; "
                             "please unmount it in the guest first", status=409) from e
        raise HypervisorError(f"changing the CD-ROM of {guest.name}", str(e), libvirt_code=code_of(e)) from e
    deadline = time.monotonic() + CDROM_WAIT_S
    while edit.cdrom_source(edit.parse(await guest.xml())) != want:
        if time.monotonic() > deadline:
            raise HypervisorError(f"changing the CD-ROM of {guest.name}",
                                  f"the medium is still not {want!r} after {CDROM_WAIT_S:.0f} s")
        await asyncio.sleep(poll)


#: libvirt opens the tray and waits a bounded time for QEMU to report it open; while the guest (its firmware
#: probing the drive, or its OS) holds the tray locked, or on a loaded host (TCG guests on two busy cores),
#: that wait runs out ("Tray of device ... is not open"): the change is retried for up to this many seconds.
TRAY_RETRY_S = 30.0


async def _update_cdrom(guest: Guest, dev: str, flags: int) -> None:
    deadline = time.monotonic() + TRAY_RETRY_S
    while True:
        try:
            await guest.update_device(dev, flags)
            return
        except libvirt.libvirtError as e:
            if "tray" not in str(e).lower() or "not open" not in str(e) or time.monotonic() > deadline:
                raise
            log.info("CD-ROM tray of %s did not open in time (%s); retrying", guest.name, e)
            await _resync_tray(guest)
            await asyncio.sleep(1)


async def _resync_tray(guest: Guest) -> None:
    """Bring libvirt's record of the tray back in line with QEMU's.

    libvirt (9.0 here) keeps the tray state from QEMU's DEVICE_TRAY_MOVED events and skips opening a tray it
    records as open. Right after a medium change it can be left recording ``tray='open'`` while QEMU's tray is
    closed (seen about one change in four under TCG: the live XML says open, ``info block`` says closed);
    every later change then fails at ``blockdev-remove-medium`` until libvirtd restarts. Opening the tray in
    QEMU makes the two agree again, and libvirt's change goes through (it closes the tray after inserting).
    """
    cdrom = edit.cdrom_element(edit.parse(await guest.xml()))
    if cdrom is None:
        return
    target, alias = cdrom.find("target"), cdrom.find("alias")
    if target is None or target.get("tray") != "open" or alias is None or not alias.get("name"):
        return
    try:
        await guest.open_tray(alias.get("name", ""))
    except libvirt.libvirtError as e:
        log.warning("could not resynchronise the CD-ROM tray of %s: %s", guest.name, e)


async def attach_disk(guest: Guest, disk: DiskSpec) -> None:
    """Attach unless a disk with this serial is there already (idempotent)."""
    dom = edit.parse(await guest.xml(inactive=True))
    if edit.disk_element(dom, disk.volume_uuid) is not None:
        return
    dev_el = Disk(disk, edit.uses_virtio_disks(dom)).element()
    try:
        await guest.attach_device(edit.element_string(dev_el), await _flags(guest))
    except libvirt.libvirtError as e:
        if code_of(e) not in NO_SUPPORT:
            raise HypervisorError(f"attaching volume {disk.volume_uuid} to {guest.name}", str(e),
                                  libvirt_code=code_of(e)) from e
        await guest.host.define(edit.with_device(await guest.xml(inactive=True), dev_el))


#: After each hot-unplug request, how long to wait for the guest to release the disk (libvirt's DEVICE_REMOVED
#: event, or the disk gone from the live definition); libvirt's own wait of ~5 s inside the request comes on
#: top. The request is repeated between waits, as Nova does: a guest still booting misses the first ACPI event.
DETACH_WAITS: tuple[float, ...] = (5.0, 10.0, 10.0)
DETACH_POLL = 0.5

_removed: dict[tuple[str, str], asyncio.Event] = {}


def device_removed(domain: str, alias: str) -> None:
    """libvirt's ``VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED`` (called on the loop by the driver): wake the waiter."""
    ev = _removed.get((domain, alias))
    if ev is not None:
        ev.set()


class DetachTimeout(AgentError):
    """The guest never released a hot-unplugged device (409 ``VM.DETACH_TIMEOUT``); it is still attached."""

    def __init__(self, vm: str, volume_uuid: str, attempts: int, seconds: float) -> None:
        super().__init__(
            "VM.DETACH_TIMEOUT",
            f"the guest of VM {vm} did not release volume {volume_uuid} after {attempts} hot-unplug requests "
            f"over {seconds:.0f} s (a guest that is still booting or has no ACPI hot-unplug support ignores them); "
            "the volume stays attached: retry once the guest runs, or stop the VM and detach it",
            status=409, details={"vmUuid": vm, "volumeUuid": volume_uuid})


async def detach_disk(guest: Guest, volume_uuid: str) -> None:
    """Detach the disk with serial ``volume_uuid``; absent: success. On a running domain, returns only once
    the guest released the disk (else :class:`DetachTimeout`, the disk still attached live and persistently)."""
    if await guest.state() in ACTIVE:
        live = edit.disk_element(edit.parse(await guest.xml()), volume_uuid)
        if live is not None:
            await _unplug_live(guest, volume_uuid, live)
    dom = edit.parse(await guest.xml(inactive=True))
    dev_el = edit.disk_element(dom, volume_uuid)
    if dev_el is None:
        return
    try:
        await guest.detach_device(edit.element_string(dev_el), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError as e:
        if code_of(e) not in NO_SUPPORT:
            raise HypervisorError(f"detaching volume {volume_uuid} from {guest.name}", str(e),
                                  libvirt_code=code_of(e)) from e
        await guest.host.define(edit.disks_without(await guest.xml(inactive=True), volume_uuid))


async def _unplug_live(guest: Guest, volume_uuid: str, live: ET.Element) -> None:
    alias_el = live.find("alias")
    key = (guest.name, alias_el.get("name", "") if alias_el is not None else "")
    event = _removed.setdefault(key, asyncio.Event())
    xml = edit.element_string(live)
    t0 = time.monotonic()
    try:
        for attempt, wait in enumerate(DETACH_WAITS):
            try:
                await guest.detach_device(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except libvirt.libvirtError as e:
                if code_of(e) in NO_SUPPORT:
                    return  # no live detach here: the persistent definition is changed by the caller
                if not await _still_live(guest, volume_uuid):
                    return
                if attempt == 0:
                    raise HypervisorError(f"detaching volume {volume_uuid} from {guest.name}", str(e),
                                          libvirt_code=code_of(e)) from e
                log.info("unplug request %d of volume %s from %s refused (%s); still waiting", attempt + 1,
                         volume_uuid, guest.name, e)
            deadline = time.monotonic() + wait
            while await _still_live(guest, volume_uuid):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                event.clear()  # the live definition is re-read at least every DETACH_POLL seconds anyway
                try:
                    await asyncio.wait_for(event.wait(), timeout=min(DETACH_POLL, left))
                except TimeoutError:
                    pass
            else:
                log.info("volume %s released by the guest of %s after %.1f s", volume_uuid, guest.name,
                         time.monotonic() - t0)
                return
            log.warning("the guest of %s has not released volume %s %.0f s after unplug request %d", guest.name,
                        volume_uuid, time.monotonic() - t0, attempt + 1)
    finally:
        if _removed.get(key) is event:
            del _removed[key]
    raise DetachTimeout(guest.name, volume_uuid, len(DETACH_WAITS), time.monotonic() - t0)


async def _still_live(guest: Guest, volume_uuid: str) -> bool:
    if await guest.state() not in ACTIVE:
        return False
    return edit.disk_element(edit.parse(await guest.xml()), volume_uuid) is not None
async def attach_nic(guest: Guest, nic: NicSpec, internal_id: int) -> None:
    """Plug a bridge NIC (live when running, and in the definition) unless one with its MAC is there."""
    dom = edit.parse(await guest.xml(inactive=True))
    if edit.interface_element(dom, nic.mac) is not None:
        return
    dev_el = BridgeInterface(nic, internal_id, edit.uses_virtio_nics(dom)).element()
    try:
        await guest.attach_device(edit.element_string(dev_el), await _flags(guest))
    except libvirt.libvirtError as e:
        if code_of(e) not in NO_SUPPORT:
            raise HypervisorError(f"attaching NIC {nic.mac} to {guest.name}", str(e), libvirt_code=code_of(e)) from e
        await guest.host.define(edit.with_device(await guest.xml(inactive=True), dev_el))


async def detach_nic(guest: Guest, mac: str, *, timeout: float, poll: float = 0.2) -> None:
    """Unplug the NIC with ``mac``; on a running domain wait until the live definition no longer has it
    (libvirt drops it when QEMU reports the guest released the device), else 409 VM.NIC_DETACH_TIMEOUT."""
    dom = edit.parse(await guest.xml(inactive=True))
    live = edit.parse(await guest.xml())
    dev_el = edit.interface_element(live, mac) or edit.interface_element(dom, mac)
    if dev_el is None:
        return
    flags = await _flags(guest)
    try:
        await guest.detach_device(edit.element_string(dev_el), flags)
    except libvirt.libvirtError as e:
        if code_of(e) not in NO_SUPPORT:
            raise HypervisorError(f"detaching NIC {mac} from {guest.name}", str(e), libvirt_code=code_of(e)) from e
        await guest.host.define(edit.interfaces_without(await guest.xml(inactive=True), mac))
        return
    if not flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
        return
    deadline = time.monotonic() + timeout
    while edit.interface_element(edit.parse(await guest.xml()), mac) is not None:
        if time.monotonic() > deadline:
            raise AgentError("VM.NIC_DETACH_TIMEOUT", f"the guest of {guest.name} did not release NIC {mac} within "
                             f"{timeout:.0f} s (no device-removed event); it is still attached", status=409)
        await asyncio.sleep(poll)
