"""VM operations as the agent performs them: driver verbs wrapped with the judger's expectations, so the
events they cause are not reported back to the controller, plus the CD-then-disk rule (reference §3.6)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kvmagent.driver.base import HypervisorDriver, VmState
from kvmagent.driver.spec import BootDev, VmSpec
from kvmagent.events import Judger

log = logging.getLogger(__name__)

RUN = {VmState.RUNNING}
HALT = {VmState.STOPPED, VmState.CRASHED}


class VmOps:
    def __init__(self, driver: HypervisorDriver, judger: Judger) -> None:
        self.driver = driver
        self.judger = judger

    @asynccontextmanager
    async def _own(self, vm_uuid: str, states: set[VmState]) -> AsyncIterator[None]:
        """Expect ``states`` while the operation runs and shortly after; if it fails, also expect the
        domain to halt (a failed start or reboot leaves it stopped, and that is in the reply already)."""
        self.judger.expect(vm_uuid, states)
        try:
            yield
        except BaseException:
            self.judger.expect(vm_uuid, HALT)
            self.judger.settle(vm_uuid)
            raise
        finally:
            self.judger.settle(vm_uuid)

    async def start(self, spec: VmSpec) -> None:
        async with self._own(spec.uuid, RUN):
            await self.driver.start_vm(spec)

    async def stop(self, vm_uuid: str, *, grace: float, force: bool) -> None:
        """Stop and undefine (1.0: a stopped VM leaves nothing on the host; the next start redefines)."""
        async with self._own(vm_uuid, HALT):
            await self.driver.stop_vm(vm_uuid, grace=grace, force=force)
            await self.driver.undefine_vm(vm_uuid)

    async def reboot(self, vm_uuid: str, boot_devs: list[BootDev], *, grace: float) -> None:
        async with self._own(vm_uuid, RUN | HALT):
            await self.driver.reboot_vm(vm_uuid, boot_devs, grace=grace)

    async def destroy(self, vm_uuid: str) -> None:
        async with self._own(vm_uuid, HALT):
            await self.driver.destroy_vm(vm_uuid, undefine=True)

    async def on_guest_reboot(self, vm_uuid: str) -> None:
        """CD-then-disk: a VM first booted from an ISO restarts from ``hd`` when the guest reboots."""
        if not await self.driver.first_boot_from_cd(vm_uuid):
            return
        log.info("VM %s rebooted after its first boot from CD; restarting it from hd", vm_uuid)
        async with self._own(vm_uuid, RUN | HALT):
            await self.driver.reboot_vm(vm_uuid, ["hd", "cdrom"], grace=0, graceful=False)
