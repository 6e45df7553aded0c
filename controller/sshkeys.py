"""SSH host-key checking, trust on first use (issue 18, security 7).

Every SSH connection the controller makes (AddKvmHost/ReconnectHost deploys, SFTP backup storage) goes
through :func:`connect`:

* no key recorded yet (AddKvmHost, AddSftpBackupStorage, rows from older versions): the key the server
  presents is accepted and returned, and the caller records it (``sshHostKey`` + ``sshHostKeyFingerprint``,
  the fingerprint shown in the inventory);
* a key recorded: the server must prove it holds THAT key during the handshake, before any password is
  sent (asyncssh ``known_hosts`` with only that key, host-key algorithms restricted to its type); another
  key fails with :class:`HostKeyChanged` naming the expected and the seen fingerprints and how to accept it;
* ``accept``: a fingerprint the administrator verified on the machine (``ReconnectHost`` /
  ``ReconnectBackupStorage`` ``acceptHostKeyFingerprint=SHA256:...``); the presented key is accepted only
  when its fingerprint equals it, and then recorded.

:func:`probe` fetches a server's key without logging in (no credential is sent): used to name the seen
fingerprint and by ``UpdateHost managementIp`` to check a new address before it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncssh

from controller.errors import InvalidArgument, OperationError

PROBE_TIMEOUT = 15


class HostKeyChanged(OperationError):
    """The server presented a key other than the recorded one (409, SYS.1006)."""


@dataclass(frozen=True)
class Seen:
    key: str          # OpenSSH public key line
    fingerprint: str  # SHA256:...


def fingerprint(key_line: str) -> str:
    return str(asyncssh.import_public_key(key_line).get_fingerprint("sha256"))


def _algs(key: asyncssh.SSHKey) -> list[str]:
    return [a.decode() for a in key.sig_algorithms]


def seen_of(conn: asyncssh.SSHClientConnection) -> Seen:
    key = conn.get_server_host_key()
    if key is None:
        raise OperationError("the SSH server presented no host key")
    line = key.export_public_key().decode().strip()
    return Seen(line, str(key.get_fingerprint("sha256")))


async def probe(host: str, port: int, recorded: str | None = None) -> Seen | None:
    """The server's host key (of the recorded key's type when one is given) without authenticating."""
    kw: dict[str, Any] = {}
    if recorded:
        kw["server_host_key_algs"] = _algs(asyncssh.import_public_key(recorded))
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(host, port, **kw), PROBE_TIMEOUT)
    except (OSError, asyncssh.Error, TimeoutError):
        return None
    if key is None:
        return None
    return Seen(key.export_public_key().decode().strip(), str(key.get_fingerprint("sha256")))


def _pinned(line: str) -> dict[str, Any]:
    key = asyncssh.import_public_key(line)
    return {"known_hosts": ([key], [], []), "server_host_key_algs": _algs(key)}


async def options(what: str, host: str, port: int, recorded: str | None, accept: str | None) -> dict[str, Any]:
    """asyncssh.connect keyword arguments that pin the host key before any password is sent: the recorded
    key; with ``accept``, the key the server presents now if (and only if) its fingerprint is ``accept``
    (read without logging in, then pinned for the real connection); nothing on first contact."""
    if accept:
        seen = await probe(host, port)
        if seen is None:
            raise OperationError(f"cannot read the SSH host key of {what} at {host}:{port}")
        check_accept(what, seen, accept)
        return _pinned(seen.key)
    if recorded:
        return _pinned(recorded)
    return {"known_hosts": None}


def check_accept(what: str, seen: Seen, accept: str | None) -> None:
    """After connecting with ``accept``: the presented key must have exactly that fingerprint."""
    if accept and seen.fingerprint != accept:
        raise HostKeyChanged(f"{what} presented host key {seen.fingerprint}, not the fingerprint "
                             f"acceptHostKeyFingerprint={accept} you asked to accept; nothing was changed")


async def changed(what: str, host: str, port: int, recorded: str, api: str) -> HostKeyChanged:
    """The error for a handshake that failed the recorded key: names expected and seen fingerprints."""
    seen = await probe(host, port, recorded)
    shown = seen.fingerprint if seen else "(could not be read)"
    return HostKeyChanged(
        f"the SSH host key of {what} ({host}:{port}) changed: expected {fingerprint(recorded)} (recorded at first "
        f"contact), seen {shown}. Nothing was sent. If the machine was reinstalled, check its key on the "
        f"console (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and call {api} with "
        f"acceptHostKeyFingerprint={shown}; otherwise someone may be intercepting the connection")


def validate_fingerprint(value: str | None) -> None:
    if value is not None and not (value.startswith("SHA256:") and 40 <= len(value) <= 60):
        raise InvalidArgument(f"invalid field[acceptHostKeyFingerprint]: {value!r} must be an OpenSSH SHA256 "
                              "fingerprint such as SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8")


def credential_changes(msg: Any, row: Mapping[str, Any], address: str,
                       check_address: Callable[[str], None]) -> dict[str, Any]:
    """The SSH connection fields an ``Update*`` message changes (``address`` — ``managementIp`` of a host,
    ``hostname`` of a backup storage —, ``username``, ``password``, ``sshPort``), to be verified by logging in
    before they are stored. A new address must pass ``check_address`` and come with the password: the stored
    password is never sent to a new address."""
    changes = {k: getattr(msg, k) for k in (address, "username", "password", "sshPort") if getattr(msg, k) is not None}
    new_address = getattr(msg, address)
    if new_address is not None and new_address != row[address]:
        check_address(new_address)
        if msg.password is None:
            raise InvalidArgument(f"invalid field[password]: changing {address} needs the password in the same "
                                  "call (the stored password is not sent to a new address)")
    return changes
