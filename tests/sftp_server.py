"""An in-process SSH server for tests: real SFTP (asyncssh's file server on the local file system) and, unless
turned off, exec requests run with the local ``/bin/sh`` (so ``qemu-img info`` over SSH really runs), one per
loopback address. The unit tier turns exec off: it runs no host command.

Importable from every tier (``tests/`` is on ``sys.path``: pytest inserts the directory of ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncssh


def _server_class(username: str, password: str) -> type[asyncssh.SSHServer]:
    class _Server(asyncssh.SSHServer):
        def begin_auth(self, username_: str) -> bool:
            return True  # authentication is always required

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username_: str, password_: str) -> bool:
            return username_ == username and password_ == password

    return _Server


async def _exec(process: asyncssh.SSHServerProcess[Any]) -> None:
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", process.command or "true",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    process.stdout.write(out.decode())
    process.stderr.write(err.decode())
    process.exit(proc.returncode or 0)


@asynccontextmanager
async def sftp_servers(hosts: Sequence[str], password: str, username: str = "root", *,
                       exec_commands: bool = True) -> AsyncIterator[list[tuple[str, int]]]:
    """One server per address in ``hosts`` (port 0: the kernel picks), accepting only ``username`` with
    ``password``; yields ``[(host, port), ...]`` in the order of ``hosts``. ``exec_commands=False`` refuses
    exec requests (SFTP only). Every server is closed on exit, also when the body raises or a later server
    fails to listen."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    servers: list[asyncssh.SSHAcceptor] = []
    try:
        for host in hosts:
            servers.append(await asyncssh.listen(
                host, 0, server_host_keys=[key], server_factory=_server_class(username, password),
                sftp_factory=True, process_factory=_exec if exec_commands else None, allow_scp=False))
        yield [(h, s.sockets[0].getsockname()[1]) for h, s in zip(hosts, servers, strict=True)]
    finally:
        for s in servers:
            s.close()
            await s.wait_closed()
