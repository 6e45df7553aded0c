"""The one subprocess runner of ZStack-Py (cloud-init's ``subp`` lesson).

Every external command of the data planes (qemu-img, ip, ebtables, dnsmasq helpers, ...) goes through
:func:`run`: argv lists only, never a shell string; a timeout on every call; optional resource limits
(used for ``qemu-img info`` on user-supplied images, as Nova does); a :class:`Result` on success and a
:class:`ProcessError` carrying argv, rc, stdout and stderr otherwise. Agent, flatnet, storage and the
controller's host deploy all use it, so the project has exactly one runner (and the unit-test tier one
place to refuse host commands).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Resource limits applied in the child before exec (``setrlimit``)."""

    cpu_seconds: int | None = None
    address_space_bytes: int | None = None

    def apply(self) -> None:
        if self.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds))
        if self.address_space_bytes is not None:
            lim = self.address_space_bytes
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


#: Limits for inspecting untrusted images (Nova: 30 s CPU, 1 GiB address space).
QEMU_IMG_INFO_LIMITS = Limits(cpu_seconds=30, address_space_bytes=1 << 30)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str


class ProcessError(Exception):
    """A command failed: it exited with an unexpected code, timed out, or could not be started."""

    def __init__(self, argv: Sequence[str], rc: int | None, stdout: str = "", stderr: str = "",
                 reason: str = "") -> None:
        self.argv = tuple(argv)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason
        what = reason or f"exit code {rc}"
        tail = stderr.strip().splitlines()[-3:] if stderr else []
        super().__init__(f"command {' '.join(self.argv)!r} failed: {what}"
                         + (f": {' / '.join(tail)}" if tail else ""))


async def _spawn(argv: Sequence[str], *, stdin: int | None, env: Mapping[str, str] | None,
                 cwd: str | None, limits: Limits | None) -> asyncio.subprocess.Process:
    """Start the child. The unit-test tier replaces this function to refuse host commands."""
    preexec = limits.apply if limits else None
    return await asyncio.create_subprocess_exec(
        *argv, stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None, cwd=cwd, preexec_fn=preexec,
        start_new_session=True)


async def run(argv: Sequence[str], *, timeout: float, ok_codes: Sequence[int] = (0,),
              input: bytes | str | None = None, env: Mapping[str, str] | None = None,
              cwd: str | None = None, limits: Limits | None = None) -> Result:
    """Run ``argv`` to completion and return its :class:`Result`.

    Guarantees: the child never outlives the call (on timeout or cancellation its whole process group
    is killed); a return code outside ``ok_codes``, a timeout or a missing executable raises
    :class:`ProcessError`. Output is decoded as UTF-8 with replacement.
    """
    if isinstance(argv, str):
        raise TypeError("run() takes an argv list, not a shell string")
    argv = [os.fspath(a) for a in argv]
    data = input.encode() if isinstance(input, str) else input
    try:
        proc = await _spawn(argv, stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
                            env=env, cwd=cwd, limits=limits)
    except (FileNotFoundError, PermissionError) as e:
        raise ProcessError(argv, None, reason=f"cannot execute: {e}") from e
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except (TimeoutError, asyncio.CancelledError) as e:
        _kill_group(proc)
        await proc.wait()
        if isinstance(e, asyncio.CancelledError):
            raise
        raise ProcessError(argv, None, reason=f"timed out after {timeout} s") from e
    res = Result(tuple(argv), proc.returncode if proc.returncode is not None else -1,
                 out.decode(errors="replace"), err.decode(errors="replace"))
    if res.rc not in ok_codes:
        raise ProcessError(argv, res.rc, res.stdout, res.stderr)
    return res


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
