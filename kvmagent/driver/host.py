"""``Host`` and ``Guest``: thin async wrappers over a libvirt connection and a domain, with verbs.

Every libvirt call runs in a worker thread (``run_in_executor``), never on the event loop. libvirt's errors
become :class:`HypervisorError` with libvirt's message, except the "absent"/"not running" codes the callers
handle themselves (see :func:`code_of`).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar

import libvirt

from kvmagent.driver.errors import HypervisorError, HypervisorUnavailable

T = TypeVar("T")

#: Shared by every Host of the process unless one is injected (simulated hosts share it too).
_EXECUTOR = ThreadPoolExecutor(max_workers=16, thread_name_prefix="libvirt")

ABSENT = (libvirt.VIR_ERR_NO_DOMAIN,)
NOT_RUNNING = (libvirt.VIR_ERR_OPERATION_INVALID,)
NO_SUPPORT = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG)


def code_of(e: libvirt.libvirtError) -> int:
    return int(e.get_error_code() or 0)


class Host:
    """One libvirt connection. ``call`` runs a blocking function in the worker pool."""

    def __init__(self, uri: str, executor: Executor | None = None) -> None:
        self.uri = uri
        self._executor = executor or _EXECUTOR
        self._conn: libvirt.virConnect | None = None

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            raise HypervisorUnavailable(f"no connection to {self.uri}")
        return self._conn

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def call(self, doing: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except libvirt.libvirtError as e:
            raise HypervisorError(doing, str(e), libvirt_code=code_of(e)) from e

    async def raw(self, fn: Callable[..., T], *args: Any) -> T:
        """Like :meth:`call` but lets ``libvirtError`` through, for callers that handle specific codes."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def connect(self) -> None:
        if self._conn is None:
            self._conn = await self.call(f"connecting to {self.uri}", libvirt.open, self.uri)

    async def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self.raw(conn.close)
            except libvirt.libvirtError:
                pass

    def forget(self) -> None:
        """Drop a broken connection without talking to it."""
        self._conn = None

    async def lookup(self, name: str) -> Guest | None:
        try:
            dom = await self.raw(self.conn.lookupByName, name)
        except libvirt.libvirtError as e:
            if code_of(e) in ABSENT:
                return None
            raise HypervisorError(f"looking up domain {name}", str(e), libvirt_code=code_of(e)) from e
        return Guest(self, dom)

    async def define(self, xml: str) -> Guest:
        return Guest(self, await self.call("defining domain", self.conn.defineXML, xml))

    async def guests(self) -> list[Guest]:
        doms = await self.call("listing domains", self.conn.listAllDomains, 0)
        return [Guest(self, d) for d in doms]


class Guest:
    """One domain. Verbs raise HypervisorError; ``absent``/``not running`` cases are the caller's."""

    def __init__(self, host: Host, dom: libvirt.virDomain) -> None:
        self.host = host
        self.dom = dom
        self.name: str = dom.name()

    async def state(self) -> int:
        """libvirt's ``VIR_DOMAIN_*`` state; ``VIR_DOMAIN_NOSTATE`` if the domain vanished meanwhile."""
        try:
            st, _reason = await self.host.raw(self.dom.state)
        except libvirt.libvirtError as e:
            if code_of(e) in ABSENT:
                return libvirt.VIR_DOMAIN_NOSTATE
            raise HypervisorError(f"reading state of {self.name}", str(e), libvirt_code=code_of(e)) from e
        return int(st)

    async def xml(self, inactive: bool = False, secure: bool = False) -> str:
        flags = (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) | (libvirt.VIR_DOMAIN_XML_SECURE if secure else 0)
        return await self.host.call(f"reading XML of {self.name}", self.dom.XMLDesc, flags)

    async def create(self) -> None:
        await self.host.call(f"starting {self.name}", self.dom.create)

    async def shutdown_acpi(self) -> None:
        """Press the ACPI power button; backends without that mode get the default shutdown."""
        try:
            await self.host.raw(self.dom.shutdownFlags, libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as e:
            if code_of(e) not in NO_SUPPORT:
                raise
            await self.host.raw(self.dom.shutdown)

    async def destroy(self) -> None:
        await self.host.raw(self.dom.destroy)

    async def undefine(self) -> None:
        await self.host.raw(self.dom.undefine)

    async def memory_and_vcpus(self) -> tuple[int, int]:
        """``(max memory KiB, vcpus)`` from ``virDomainGetInfo``."""
        info = await self.host.call(f"reading info of {self.name}", self.dom.info)
        return int(info[1]), int(info[3])

    async def update_device(self, xml: str, flags: int) -> None:
        await self.host.raw(self.dom.updateDeviceFlags, xml, flags)

    async def open_tray(self, qom_id: str) -> None:
        """Open a drive's tray through QEMU's monitor (``blockdev-open-tray``, forced).

        Only for resynchronising libvirt's view of a tray (see ``devices._update_cdrom``): the domain gets
        libvirt's "custom-monitor" taint in its log, which is why nothing else goes this way.
        """
        import libvirt_qemu  # part of libvirt-python; imported here, as only this workaround needs it

        cmd = json.dumps({"execute": "blockdev-open-tray", "arguments": {"id": qom_id, "force": True}})
        await self.host.raw(libvirt_qemu.qemuMonitorCommand, self.dom, cmd, 0)

    async def attach_device(self, xml: str, flags: int) -> None:
        await self.host.raw(self.dom.attachDeviceFlags, xml, flags)

    async def detach_device(self, xml: str, flags: int) -> None:
        await self.host.raw(self.dom.detachDeviceFlags, xml, flags)
