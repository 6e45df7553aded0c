"""Test helpers for the storage functional tests: qemu-io pattern writes/reads through the runner."""

from __future__ import annotations

from pathlib import Path

from zsutil.runner import run


async def qio_write(path: Path, pattern: int, offset: int, length: int = 65536, fmt: str = "qcow2") -> None:
    await run(["qemu-io", "-f", fmt, "-c", f"write -P {pattern} {offset} {length}", str(path)], timeout=60)


async def qio_pattern_ok(
    path: Path, pattern: int, offset: int, length: int = 65536, fmt: str = "qcow2"
) -> bool:
    """Whether the guest-visible bytes at ``offset`` all equal ``pattern`` (qemu-io ``read -P``)."""
    res = await run(
        ["qemu-io", "-f", fmt, "-c", f"read -P {pattern} {offset} {length}", str(path)],
        timeout=60,
        ok_codes=(0, 1),
    )
    return res.rc == 0 and "Pattern verification failed" not in res.stdout + res.stderr
