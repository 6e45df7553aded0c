"""``LibvirtDriver``: the hypervisor driver over libvirt, on ``qemu:///system`` or the test driver.

The same code serves real hosts and simulated ones (``test:///<abs path>/node.xml``, see ``testnode``);
the only backend difference is capability-based: backends without live device update get the change in
the persistent definition (see ``devices``), and bridges of simulated hosts are libvirt interfaces.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from pathlib import Path
from typing import Any

import libvirt

from kvmagent.driver import devices, facts, livesnap, migration
from kvmagent.driver.base import (
    Capacity,
    DomainEvent,
    EventCallback,
    HostFacts,
    HypervisorDriver,
    LostCallback,
    VmState,
)
from kvmagent.driver.errors import AgentError, DomainNotFound, HypervisorError, StateConflict
from kvmagent.driver.eventloop import bind_event_loop
from kvmagent.driver.events_map import ACTIVE, event_state, state_of
from kvmagent.driver.host import ABSENT, NOT_RUNNING, Guest, Host, code_of
from kvmagent.driver.probe import caps_have_kvm, choose_domain_type, hvm_flag
from kvmagent.driver.spec import BootDev, DiskSpec, IsoSpec, NicSpec, VmSpec
from kvmagent.driver.xml import build_domain_xml
from kvmagent.driver.xml.edit import GraphicsInfo, boot_devs, graphics, metadata, parse, set_boot
from zsutil.revert import Reverter

log = logging.getLogger(__name__)

#: Seconds between two presses of a guest's ACPI power button during a graceful stop.
ACPI_RETRY = 5.0


class LibvirtDriver(HypervisorDriver):
    """See :mod:`kvmagent.driver.base` for the guarantees.

    ``state_dir`` holds ``console/<vmUuid>.log`` (the guest serial console). ``domain_type`` is
    ``auto`` (probe), ``kvm`` or ``qemu``.
    """

    def __init__(self, uri: str, *, state_dir: Path, domain_type: str = "auto",
                 cpuinfo_path: Path = Path("/proc/cpuinfo"), poll_interval: float = 0.2) -> None:
        self.uri = uri
        self.host = Host(uri)
        self.state_dir = state_dir
        self.configured_type = domain_type
        self.domain_type = "qemu"
        self.hvm_flag: str | None = None
        self._cpuinfo_path = cpuinfo_path
        self._poll = poll_interval
        self._on_event: EventCallback | None = None
        self._on_lost: LostCallback | None = None
        self._callback_ids: list[int] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- connection -------------------------------------------------------------------------------
    async def open(self) -> None:
        if self.host.connected:
            return
        bind_event_loop()
        cpuinfo = await asyncio.to_thread(self._cpuinfo_path.read_text)
        self.hvm_flag = hvm_flag(cpuinfo)
        await self.host.connect()
        try:
            caps = await self.host.call("reading capabilities", self.host.conn.getCapabilities)
            self.domain_type = choose_domain_type(self.configured_type, self.hvm_flag, caps_have_kvm(caps))
            await self.host.call("subscribing to events", self._subscribe_blocking, self.host.conn)
        except BaseException:
            await self.host.disconnect()
            raise
        await asyncio.to_thread((self.state_dir / "console").mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread((self.state_dir / "vrouter").mkdir, mode=0o700, parents=True, exist_ok=True)
        log.info("connected to %s, domain type %s (hvm flag %s)", self.uri, self.domain_type, self.hvm_flag)

    def _subscribe_blocking(self, conn: libvirt.virConnect) -> None:
        self._callback_ids = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot, None),
        ]
        try:
            self._callback_ids.append(conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self._device_removed, None))
        except libvirt.libvirtError:
            pass  # detach then waits by polling the live definition
        for fn, args in ((conn.registerCloseCallback, (self._closed, None)), (conn.setKeepAlive, (5, 3))):
            try:
                fn(*args)
            except libvirt.libvirtError:
                pass  # the test driver has neither (it lives in our process and cannot break)

    async def close(self) -> None:
        if not self.host.connected:
            return
        conn = self.host.conn
        ids, self._callback_ids = self._callback_ids, []

        def unsubscribe() -> None:
            for cid in ids:
                try:
                    conn.domainEventDeregisterAny(cid)
                except libvirt.libvirtError:
                    pass
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass

        await self.host.raw(unsubscribe)
        await self.host.disconnect()
        for t in list(self._tasks):
            t.cancel()

    def subscribe(self, on_event: EventCallback, on_lost: LostCallback | None = None) -> None:
        self._on_event = on_event
        self._on_lost = on_lost

    # -- event callbacks (run on the loop, via libvirtaio) ------------------------------------------
    def _dispatch(self, fn: Any, arg: Any) -> None:
        if fn is None:
            return
        res = fn(arg)
        if inspect.isawaitable(res):
            task = asyncio.ensure_future(res)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _lifecycle(self, _conn: Any, dom: libvirt.virDomain, event: int, detail: int, _opaque: Any) -> None:
        state, reason = event_state(event, detail)
        self._dispatch(self._on_event, DomainEvent(dom.name(), state, reason))

    def _reboot(self, _conn: Any, dom: libvirt.virDomain, _opaque: Any) -> None:
        self._dispatch(self._on_event, DomainEvent(dom.name(), None, "rebooted", rebooted=True))

    def _device_removed(self, _conn: Any, dom: libvirt.virDomain, alias: str, _opaque: Any) -> None:
        devices.device_removed(dom.name(), alias)

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        why = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}.get(
            reason, str(reason))
        log.warning("libvirt connection to %s closed: %s", self.uri, why)
        self.host.forget()
        self._dispatch(self._on_lost, f"libvirt connection closed: {why}")

    # -- lifecycle ----------------------------------------------------------------------------------
    def console_log(self, vm_uuid: str) -> Path:
        return self.state_dir / "console" / f"{vm_uuid}.log"

    async def start_vm(self, spec: VmSpec) -> None:
        xml = build_domain_xml(spec, domain_type=self.domain_type, console_log=self.console_log(spec.uuid))
        guest = await self.host.lookup(spec.uuid)
        if guest is not None:
            if await guest.state() in ACTIVE:
                meta = metadata(parse(await guest.xml()))
                if meta is not None and meta.fingerprint == spec.fingerprint():
                    return
                raise StateConflict(f"VM {spec.uuid} is already running on this host with another "
                                    "configuration; stop it first", vmUuid=spec.uuid)
            await self._undefine(guest)
        async with Reverter() as r:
            guest = await self.host.define(xml)
            r.add(self._remove, guest)
            await guest.create()
            r.success()

    async def _remove(self, guest: Guest) -> None:
        await self._destroy(guest)
        await self._undefine(guest)

    async def _destroy(self, guest: Guest) -> None:
        try:
            await guest.destroy()
        except libvirt.libvirtError as e:
            if code_of(e) not in ABSENT + NOT_RUNNING:
                raise HypervisorError(f"destroying {guest.name}", str(e), libvirt_code=code_of(e)) from e

    async def _undefine(self, guest: Guest) -> None:
        if await guest.state() in ACTIVE:
            await self._destroy(guest)
        try:
            await guest.undefine()
        except libvirt.libvirtError as e:
            if code_of(e) not in ABSENT:
                raise HypervisorError(f"undefining {guest.name}", str(e), libvirt_code=code_of(e)) from e

    async def stop_vm(self, vm_uuid: str, *, grace: float, force: bool = False) -> None:
        guest = await self.host.lookup(vm_uuid)
        if guest is None or await guest.state() not in ACTIVE:
            return
        if not force:
            # The power button is pressed again every ACPI_RETRY seconds (as ZStack 1.0's agent does in its
            # shutdown loop): a guest still booting (firmware, init scripts before acpid or before init handles
            # the request) drops a press, and would otherwise be destroyed only when ``grace`` runs out.
            deadline = time.monotonic() + grace
            presses = 0
            while time.monotonic() < deadline:
                try:
                    await guest.shutdown_acpi()
                except libvirt.libvirtError as e:
                    if code_of(e) in ABSENT + NOT_RUNNING:
                        return
                    raise HypervisorError(f"shutting down {vm_uuid}", str(e), libvirt_code=code_of(e)) from e
                presses += 1
                press_deadline = min(deadline, time.monotonic() + ACPI_RETRY)
                while time.monotonic() < press_deadline:
                    if await guest.state() not in ACTIVE:
                        return
                    await asyncio.sleep(self._poll)
            log.info("VM %s did not power off within %.1f s (power button pressed %d times); destroying it",
                     vm_uuid, grace, presses)
        await self._destroy(guest)

    async def reboot_vm(self, vm_uuid: str, boot_devs: list[BootDev], *, grace: float,
                        graceful: bool = True) -> None:
        guest = await self._guest(vm_uuid, "rebooting")
        if graceful:
            await self.stop_vm(vm_uuid, grace=grace)
        else:
            await self._destroy(guest)
        xml = set_boot(await guest.xml(inactive=True), boot_devs, clear_first_boot=True)
        guest = await self.host.define(xml)
        await guest.create()

    async def destroy_vm(self, vm_uuid: str, *, undefine: bool = True) -> None:
        guest = await self.host.lookup(vm_uuid)
        if guest is None:
            return
        await self._destroy(guest)
        if undefine:
            await self._undefine(guest)

    async def undefine_vm(self, vm_uuid: str) -> None:
        guest = await self.host.lookup(vm_uuid)
        if guest is not None:
            await self._undefine(guest)

    async def _guest(self, vm_uuid: str, doing: str) -> Guest:
        guest = await self.host.lookup(vm_uuid)
        if guest is None:
            raise DomainNotFound(vm_uuid, doing)
        return guest

    # -- queries ------------------------------------------------------------------------------------
    async def list_vms(self) -> dict[str, VmState]:
        pairs = await self.host.call("listing domains", facts.read_states, self.host.conn)
        return {name: state_of(st) for name, st in pairs}

    async def vm_state(self, vm_uuid: str) -> VmState | None:
        guest = await self.host.lookup(vm_uuid)
        if guest is None:
            return None
        st = await guest.state()
        return None if st == libvirt.VIR_DOMAIN_NOSTATE else state_of(st)

    async def graphics(self, vm_uuid: str) -> GraphicsInfo:
        guest = await self._guest(vm_uuid, "reading the console address")
        info = graphics(parse(await guest.xml(secure=True)))  # secure: with the console password
        if info is None:
            raise AgentError("VM.NO_GRAPHICS", f"VM {vm_uuid} has no VNC or SPICE device", status=404)
        return info

    async def first_boot_from_cd(self, vm_uuid: str) -> bool:
        guest = await self.host.lookup(vm_uuid)
        if guest is None:
            return False
        dom = parse(await guest.xml(inactive=True))
        meta = metadata(dom)
        devs = boot_devs(dom)
        return bool(meta and meta.first_boot_from_cd and devs and devs[0] == "cdrom")

    async def bridge_exists(self, name: str) -> bool:
        if not name or "/" in name or name in (".", ".."):
            return False
        if self.uri.startswith("test:"):
            try:
                await self.host.raw(self.host.conn.interfaceLookupByName, name)
            except libvirt.libvirtError:
                return False
            return True
        return await asyncio.to_thread(Path(f"/sys/class/net/{name}/bridge").is_dir)

    async def host_facts(self) -> HostFacts:
        return await self.host.call("reading host facts", lambda: facts.read_facts(
            self.host.conn, hvm_flag=self.hvm_flag, domain_type=self.domain_type))

    async def capacity(self) -> Capacity:
        return await self.host.call("reading capacity", facts.read_capacity, self.host.conn)

    # -- devices ------------------------------------------------------------------------------------
    async def change_cdrom(self, vm_uuid: str, iso: IsoSpec | None) -> None:
        await devices.change_cdrom(await self._guest(vm_uuid, "changing the CD-ROM"), iso, poll=self._poll)

    async def attach_disk(self, vm_uuid: str, disk: DiskSpec) -> None:
        await devices.attach_disk(await self._guest(vm_uuid, "attaching a disk"), disk)

    async def detach_disk(self, vm_uuid: str, volume_uuid: str) -> None:
        await devices.detach_disk(await self._guest(vm_uuid, "detaching a disk"), volume_uuid)

    async def attach_nic(self, vm_uuid: str, nic: NicSpec, internal_id: int) -> None:
        await devices.attach_nic(await self._guest(vm_uuid, "attaching a NIC"), nic, internal_id)

    async def detach_nic(self, vm_uuid: str, mac: str, *, timeout: float) -> None:
        await devices.detach_nic(await self._guest(vm_uuid, "detaching a NIC"), mac, timeout=timeout,
                                 poll=self._poll)

    async def migrate_vm(self, vm_uuid: str, dest_ip: str, *, copy_storage: bool,
                         timeout: float) -> tuple[float, int | None]:
        if self.uri.startswith("test:"):
            return await super().migrate_vm(vm_uuid, dest_ip, copy_storage=copy_storage, timeout=timeout)
        guest = await self._guest(vm_uuid, "migrating")
        return await migration.migrate(guest, dest_ip, copy_storage=copy_storage, timeout=timeout)

    async def migration_progress(self, vm_uuid: str) -> dict[str, int] | None:
        return migration.current(vm_uuid)

    async def switch_disk_top(self, vm_uuid: str, volume_uuid: str, new_top: str) -> None:
        guest = await self._guest(vm_uuid, "taking a live snapshot")
        f = await self.host_facts()
        if not f.live_snapshot:
            raise livesnap.LiveSnapshotUnsupported(vm_uuid, f"the {f.hypervisor} backend (libvirt "
                                                   f"{f.libvirt_version}) has no external disk snapshots")
        await livesnap.switch_disk_top(guest, volume_uuid, new_top)
