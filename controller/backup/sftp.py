"""SSH/SFTP sessions to an SFTP backup storage: connect, capacity, remote commands.

Every session authenticates with the storage's username and password, after the server proved it holds the
SSH host key recorded at AddSftpBackupStorage (trust on first use, ``controller.sshkeys``; 1.0 did not check).
Failures become :class:`BackupStorageError` with a message naming the host, port and
the reason (wrong password, unreachable, refused) — never the password.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncssh

from controller import sealed, sshkeys
from controller.errors import OperationError

CONNECT_TIMEOUT = 20


class BackupStorageError(OperationError):
    """The backup storage could not be reached or refused an operation (409, SYS.1006)."""


@dataclass(frozen=True)
class Endpoint:
    hostname: str
    port: int
    username: str
    password: str
    #: the recorded SSH host key (OpenSSH line; None: first contact) and a fingerprint to accept instead
    host_key: str | None = None
    accept: str | None = None

    @classmethod
    def of(cls, row: Any, holder: Any) -> Endpoint:
        """The endpoint of a BackupStorage row (or any mapping with hostname/sshPort/username/password), its
        sealed password opened with the key of ``holder`` (the controller or an API context)."""
        key = row["sshHostKey"] if "sshHostKey" in row.keys() else None
        return cls(row["hostname"], int(row["sshPort"]), row["username"], sealed.unseal(holder, row["password"]) or "",
                   key)

    def __repr__(self) -> str:  # never print the password
        return f"Endpoint({self.username}@{self.hostname}:{self.port})"


@asynccontextmanager
async def connect(ep: Endpoint) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An authenticated SSH connection, closed on exit; the server must hold the recorded host key before the
    password is sent (``controller.sshkeys``)."""
    where = f"{ep.username}@{ep.hostname}:{ep.port}"
    pin = await sshkeys.options(f"sftp backup storage {ep.hostname}", ep.hostname, ep.port, ep.host_key, ep.accept)
    try:
        conn = await asyncssh.connect(
            ep.hostname, ep.port, username=ep.username, password=ep.password,
            client_keys=None, agent_path=None, connect_timeout=CONNECT_TIMEOUT, login_timeout=CONNECT_TIMEOUT,
            keepalive_interval=30, **pin)
    except asyncssh.HostKeyNotVerifiable as e:
        raise await sshkeys.changed(f"sftp backup storage {ep.hostname}", ep.hostname, ep.port, str(ep.host_key),
                                    "ReconnectBackupStorage") from e
    except asyncssh.PermissionDenied as e:
        raise BackupStorageError(f"cannot log in to sftp backup storage {where}: wrong username or password "
                                 f"({e.reason})") from e
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise BackupStorageError(f"cannot connect to sftp backup storage {where}: "
                                 f"{getattr(e, 'reason', None) or e or type(e).__name__}") from e
    try:
        sshkeys.check_accept(f"sftp backup storage {ep.hostname}:{ep.port}", sshkeys.seen_of(conn), ep.accept)
        yield conn
    finally:
        conn.close()
        await conn.wait_closed()


async def execute(conn: asyncssh.SSHClientConnection, argv: Sequence[str], *, timeout: float = 120) -> str:
    """Run ``argv`` (quoted, no shell expansion) on the storage host; its stdout, or BackupStorageError."""
    cmd = shlex.join(argv)
    try:
        res = await conn.run(cmd, check=False, timeout=timeout)
    except (asyncssh.Error, OSError, TimeoutError) as e:
        raise BackupStorageError(f"command {cmd!r} on the backup storage failed: {e}") from e
    if res.exit_status != 0:
        err = str(res.stderr or "").strip()[-500:]
        raise BackupStorageError(f"command {cmd!r} on the backup storage exited {res.exit_status}: {err}")
    return str(res.stdout or "")


async def capacity(sftp: asyncssh.SFTPClient, path: str) -> tuple[int, int]:
    """(total, available) bytes of the file system holding ``path`` (statvfs over SFTP)."""
    try:
        st = await sftp.statvfs(path)
    except (asyncssh.SFTPError, OSError) as e:
        raise BackupStorageError(f"cannot measure the capacity of {path} on the backup storage: {e}") from e
    return st.blocks * st.frsize, st.bavail * st.frsize


async def prepare(ep: Endpoint, url: str) -> tuple[int, int, sshkeys.Seen]:
    """Connect, create ``url`` (with parents) and return its (total, available) capacity and the server's key."""
    async with connect(ep) as conn, conn.start_sftp_client() as sftp:
        try:
            await sftp.makedirs(url, exist_ok=True)
        except (asyncssh.SFTPError, OSError) as e:
            raise BackupStorageError(f"cannot create the directory {url} on sftp backup storage "
                                     f"{ep.hostname}: {e}") from e
        return (*await capacity(sftp, url), sshkeys.seen_of(conn))


async def remove_tree(ep: Endpoint, path: str) -> None:
    """Remove a file or directory tree on the storage; a missing path is not an error."""
    async with connect(ep) as conn, conn.start_sftp_client() as sftp:
        try:
            if await sftp.isdir(path):
                await sftp.rmtree(path)
            elif await sftp.exists(path):
                await sftp.remove(path)
        except (asyncssh.SFTPError, OSError) as e:
            raise BackupStorageError(f"cannot delete {path} on sftp backup storage {ep.hostname}: {e}") from e
