"""The hypervisor driver interface: what the agent may ask of a hypervisor, and what it is guaranteed.

Guarantees every implementation gives (the contract tests in ``tests/contract/test_driver_contract.py``
check them against each backend):

* **Idempotent verbs.** Starting a running VM with the same spec succeeds without touching it; stopping,
  destroying or undefining a VM that is not there succeeds ("destroy of a missing domain succeeds").
* **No half-started VMs.** A failed ``start_vm`` leaves nothing defined (unless the same VM was already
  running, which is then left alone); an impossible spec (e.g. host-passthrough on TCG) fails before
  anything is defined.
* **Graceful first.** ``stop_vm`` asks the guest to power off (ACPI) and waits up to ``timeout`` seconds,
  then destroys; ``force`` destroys at once. ``stop_vm`` leaves the domain defined; ``destroy_vm`` with
  ``undefine=True`` removes it.
* **Events.** Lifecycle changes of every domain (also ones caused out of band, e.g. ``virsh destroy`` or a
  guest powering off) reach the subscribed callback as :class:`DomainEvent` on the event loop.
* **Never blocks the loop.** Every method is a coroutine; libvirt work happens in worker threads.
* **Live snapshots are all or nothing.** ``switch_disk_top`` either switches the running disk to the new
  layer (verified) or leaves the domain as it was; a backend that cannot do it says so
  (``VM.LIVE_SNAPSHOT_UNSUPPORTED``) and ``HostFacts.live_snapshot`` is False there.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kvmagent.driver.spec import BootDev, DiskSpec, IsoSpec, NicSpec, VmSpec
from kvmagent.driver.xml.edit import GraphicsInfo


class VmState(enum.StrEnum):
    """Domain states as the agent reports them (reference §3.9, plus Paused and Crashed)."""

    RUNNING = "Running"
    PAUSED = "Paused"
    STOPPED = "Stopped"
    CRASHED = "Crashed"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class DomainEvent:
    """A lifecycle change of one domain. ``state`` is None for events that change no state (defined,
    undefined); ``rebooted`` marks libvirt's REBOOT event (the guest reset itself)."""

    vm_uuid: str
    state: VmState | None
    reason: str
    rebooted: bool = False


@dataclass(frozen=True)
class HostFacts:
    cpu_num: int
    cpu_mhz: int
    cpu_model: str
    memory_bytes: int
    libvirt_version: str
    qemu_version: str
    hvm_flag: str | None
    domain_type: str
    hypervisor: str
    #: ``capability:liveSnapshot``: ``switch_disk_top`` works here (QEMU backend, libvirt >= 1.0.0 and
    #: QEMU >= 1.3.0 as in ZStack 1.0).
    live_snapshot: bool = False


@dataclass(frozen=True)
class Capacity:
    """Host capacity; "used" is what running domains take."""

    cpu_num: int
    cpu_speed_mhz: int
    used_cpu: int
    total_memory_bytes: int
    used_memory_bytes: int


EventCallback = Callable[[DomainEvent], Awaitable[None] | None]
LostCallback = Callable[[str], Awaitable[None] | None]


class HypervisorDriver(abc.ABC):
    """One host's hypervisor. Call :meth:`open` before anything else and :meth:`close` at the end."""

    domain_type: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, decide the domain type (probe unless configured), subscribe to events. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Unsubscribe and disconnect. Idempotent."""

    @abc.abstractmethod
    def subscribe(self, on_event: EventCallback, on_lost: LostCallback | None = None) -> None:
        """Deliver :class:`DomainEvent` to ``on_event``; call ``on_lost(reason)`` if the connection breaks."""

    @abc.abstractmethod
    async def start_vm(self, spec: VmSpec) -> None:
        """Define and start. Same spec already running: success, untouched. Running with another spec:
        :class:`~kvmagent.driver.errors.StateConflict`. Defined but not running: redefined from ``spec``.
        Failure leaves nothing defined."""

    @abc.abstractmethod
    async def stop_vm(self, vm_uuid: str, *, grace: float, force: bool = False) -> None:
        """Graceful ACPI shutdown, then destroy after ``grace`` s (at once if ``force``). Missing or
        already stopped: success. The definition stays."""

    @abc.abstractmethod
    async def reboot_vm(self, vm_uuid: str, boot_devs: list[BootDev], *, grace: float,
                        graceful: bool = True) -> None:
        """Stop (gracefully, waiting ``grace`` s, unless told otherwise), rewrite the boot order, start
        again. Missing: DomainNotFound."""

    @abc.abstractmethod
    async def destroy_vm(self, vm_uuid: str, *, undefine: bool = True) -> None:
        """Hard power-off, then (by default) undefine. Missing: success."""

    @abc.abstractmethod
    async def undefine_vm(self, vm_uuid: str) -> None:
        """Remove a stopped domain's definition (a running one is destroyed first). Missing: success."""

    @abc.abstractmethod
    async def list_vms(self) -> dict[str, VmState]:
        """Every domain of this host (running or defined) with its state, by VM uuid (domain name)."""

    @abc.abstractmethod
    async def vm_state(self, vm_uuid: str) -> VmState | None:
        """The domain's state, None when there is no such domain."""

    @abc.abstractmethod
    async def graphics(self, vm_uuid: str) -> GraphicsInfo:
        """Protocol and port of the running domain's first VNC/SPICE device. Missing: DomainNotFound."""

    @abc.abstractmethod
    async def change_cdrom(self, vm_uuid: str, iso: IsoSpec | None) -> None:
        """Insert (``iso``) or eject (None) the CD-ROM medium, live and in the definition. Idempotent."""

    @abc.abstractmethod
    async def attach_disk(self, vm_uuid: str, disk: DiskSpec) -> None:
        """Attach a data disk (live if running, and in the definition). Already attached: success."""

    @abc.abstractmethod
    async def detach_disk(self, vm_uuid: str, volume_uuid: str) -> None:
        """Detach the disk whose serial is ``volume_uuid``. Not attached: success."""

    async def attach_nic(self, vm_uuid: str, nic: NicSpec, internal_id: int) -> None:
        """Plug a NIC (live if running, and in the definition). A NIC with its MAC there: success."""
        raise NotImplementedError

    async def detach_nic(self, vm_uuid: str, mac: str, *, timeout: float) -> None:
        """Unplug the NIC with ``mac``; when running, return once the guest released it. Absent: success."""
        raise NotImplementedError

    async def migrate_vm(self, vm_uuid: str, dest_ip: str, *, copy_storage: bool,
                         timeout: float) -> tuple[float, int | None]:
        """Live-migrate the running VM to the host at ``dest_ip`` (its definition moves too); returns (seconds,
        bytes transferred or None). Failure or timeout: the VM still runs here. Backend without it:
        ``VM.MIGRATION_UNSUPPORTED`` (501)."""
        from kvmagent.driver.errors import AgentError

        raise AgentError("VM.MIGRATION_UNSUPPORTED", f"this hypervisor backend cannot live-migrate VM {vm_uuid}",
                         status=501)

    async def migration_progress(self, vm_uuid: str) -> dict[str, int] | None:
        """The progress of the migration of ``vm_uuid`` running from here (byte counts, see
        :func:`kvmagent.driver.migration.progress_from_stats`), or None when none runs."""
        return None

    @abc.abstractmethod
    async def switch_disk_top(self, vm_uuid: str, volume_uuid: str, new_top: str) -> None:
        """Live snapshot, hypervisor side: the running VM's disk whose serial is ``volume_uuid`` gets the
        existing qcow2 overlay ``new_top`` as its active layer; its current image becomes the backing.
        Already the active layer: success. Not running: StateConflict. Missing: DomainNotFound. Backend
        without it: ``VM.LIVE_SNAPSHOT_UNSUPPORTED`` (501), nothing changed."""

    @abc.abstractmethod
    async def first_boot_from_cd(self, vm_uuid: str) -> bool:
        """True when the domain was started "first boot only from CD" and still boots from cdrom first."""

    @abc.abstractmethod
    async def bridge_exists(self, name: str) -> bool:
        """Whether the Linux bridge ``name`` exists on this host."""

    @abc.abstractmethod
    async def host_facts(self) -> HostFacts: ...

    @abc.abstractmethod
    async def capacity(self) -> Capacity: ...
