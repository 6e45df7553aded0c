"""libvirt's event loop on asyncio (``libvirtaio``), made safe for libvirt calls from worker threads.

The agent never calls libvirt on the event loop; it calls it from worker threads. libvirt then adds,
updates and removes its handles and timers *from those threads*, and stock ``libvirtaio`` would touch the
asyncio loop from a foreign thread (``call_soon``/``create_task`` are not thread-safe and do not wake the
loop, so events could sit unseen). :class:`ThreadSafeAsyncIOImpl` books the callback synchronously (libvirt
needs the id back) and hands every loop interaction to the loop with ``call_soon_threadsafe``, in order.

libvirt accepts one event implementation per process: :func:`bind_event_loop` registers it once and
rebinds it to the running loop when a previous loop has gone away (test suites run one loop per test).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import libvirt
import libvirtaio

_lock = threading.Lock()
_impl: ThreadSafeAsyncIOImpl | None = None


class ThreadSafeAsyncIOImpl(libvirtaio.virEventAsyncIOImpl):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._thread_id: int | None = None

    def _note_thread(self) -> None:
        self._thread_id = threading.get_ident()

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._thread_id

    def _defer(self, fn: Any, *args: Any) -> None:
        if self.loop.is_closed():
            return  # the loop is gone and so is everything this would touch; rebind() clears the books
        if self._on_loop():
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
        callback = libvirtaio.FDCallback(self, cb, opaque, descriptor=self.descriptors[fd], event=event)
        self.callbacks[callback.iden] = callback
        self._pending_inc()
        self._defer(self.descriptors[fd].add_handle, callback)
        return int(callback.iden)

    def _update_handle(self, watch: int, event: int) -> None:
        self._defer(super()._update_handle, watch, event)

    def _remove_handle(self, watch: int) -> int:
        if watch not in self.callbacks:
            return -1
        self._defer(super()._remove_handle, watch)
        return 0

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        callback = libvirtaio.TimeoutCallback(self, cb, opaque)
        self.callbacks[callback.iden] = callback
        self._pending_inc()
        self._defer(callback.update, timeout)
        return int(callback.iden)

    def _update_timeout(self, timer: int, timeout: int) -> None:
        self._defer(super()._update_timeout, timer, timeout)

    def _remove_timeout(self, timer: int) -> int:
        if timer not in self.callbacks:
            return -1
        self._defer(super()._remove_timeout, timer)
        return 0

    def rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move to a new loop; callbacks left from the dead loop belonged to closed connections."""
        self.loop = loop
        self.callbacks.clear()
        self.descriptors.clear()
        self._pending = 0
        self._thread_id = threading.get_ident()


def _quiet_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; the driver raises them as exceptions instead."""


def bind_event_loop() -> None:
    """Make libvirt deliver events on the running asyncio loop; call it on the loop before connecting."""
    global _impl
    loop = asyncio.get_running_loop()
    with _lock:
        if _impl is None:
            libvirt.registerErrorHandler(_quiet_errors, None)
            _impl = ThreadSafeAsyncIOImpl(loop)
            _impl._note_thread()
            _impl.register()
        elif _impl.loop is not loop:
            if _impl.loop.is_running() and not _impl.loop.is_closed():
                raise RuntimeError("libvirt events are bound to another running asyncio loop")
            _impl.rebind(loop)
