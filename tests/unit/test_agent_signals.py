"""The agent stops on its own SIGTERM, and not when a forked helper (pyroute2 forks helpers to work inside
network namespaces and SIGTERMs them) gets one."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from kvmagent.main import install_stop_handlers


@pytest.fixture
def _restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def _helper() -> None:
    """The forked helper: waits to be terminated, like pyroute2's namespace helpers."""
    time.sleep(10)
    os._exit(0)


@pytest.mark.usefixtures("_restore_handlers")
async def test_sigterm_of_a_forked_helper_does_not_stop_the_agent() -> None:
    stop = asyncio.Event()
    install_stop_handlers(asyncio.get_running_loop(), stop)
    pid = os.fork()
    if pid == 0:
        _helper()
    await asyncio.sleep(0.05)
    os.kill(pid, signal.SIGTERM)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM
    await asyncio.sleep(0.2)
    assert not stop.is_set(), "the helper's SIGTERM stopped the agent"
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(stop.wait(), 2)
