"""Secrets at rest (issue 18, security 6): host and backup-storage passwords are stored encrypted.

Choice: encrypt with a key file kept outside the database, not "forget the password and deploy a controller
SSH key". Backup-storage passwords must stay usable (every image download logs in to the storage, and the
hosts' downloads need a credential too), and ReconnectHost on a reinstalled host needs the password again;
a key-only scheme would change 1.0's API contract (AddKvmHost/AddSftpBackupStorage take passwords). So a
stolen database copy (a backup, a ``controller.db`` read through a bug) holds no usable password, while the
controller keeps working as before.

* The key: ``secret_key_path`` (default ``controller.key`` beside the database), 32 random bytes as a
  Fernet key (AES-128-CBC + HMAC-SHA256), created 0600 at first start, never in the database, never logged.
* A sealed value is ``sealed:v1:<fernet token>``; :func:`unseal` also accepts an old clear-text value
  (databases written before this change), and :func:`seal_existing` seals those at start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from controller.core import Controller, on_start
from controller.errors import ApiError

log = logging.getLogger(__name__)
PREFIX = "sealed:v1:"
_KEYS: dict[str, Fernet] = {}


class SecretKeyError(ApiError):
    status, code, description = 500, "SYS.1000", "the controller's secret key is unusable"


def key_path(core: Controller) -> Path:
    configured = getattr(core.config, "secret_key_path", None)
    return Path(configured) if configured else Path(core.config.db_path).with_name("controller.key")


def _fernet(core: Controller) -> Fernet:
    path = key_path(core)
    got = _KEYS.get(str(path))
    if got is not None:
        return got
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
            f.flush()
            os.fsync(f.fileno())
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    try:
        fernet = Fernet(path.read_bytes().strip())
    except ValueError as e:
        raise SecretKeyError(f"the secret key file {path} is not a valid key; restore it from a backup") from e
    _KEYS[str(path)] = fernet
    return fernet


def _core(holder: Any) -> Controller:
    core: Controller = getattr(holder, "core", holder)
    return core


def seal(holder: Any, plain: str | None) -> str | None:
    """The stored form of a secret (None stays None)."""
    if plain is None or plain.startswith(PREFIX):
        return plain
    return PREFIX + _fernet(_core(holder)).encrypt(plain.encode()).decode()


def unseal(holder: Any, stored: str | None) -> str | None:
    """The clear secret of a stored value (an old clear-text value is returned as it is)."""
    if stored is None or not stored.startswith(PREFIX):
        return stored
    try:
        return _fernet(_core(holder)).decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken as e:
        raise SecretKeyError(f"a stored password cannot be decrypted with {key_path(_core(holder))}: the key file "
                             "was replaced; restore the original key file") from e


async def seal_existing(core: Controller) -> int:
    """Seal clear-text passwords left by older versions; returns how many were sealed."""
    n = 0
    async with core.db.write() as tx:
        for table in ("Host", "BackupStorage"):
            rows = await tx.fetchall(f"SELECT uuid, password FROM {table} WHERE password IS NOT NULL "
                                     "AND password != '' AND password NOT LIKE 'sealed:v1:%'")
            for r in rows:
                await tx.execute(f"UPDATE {table} SET password=? WHERE uuid=?", (seal(core, r["password"]),
                                                                                r["uuid"]))
                n += 1
    if n:
        log.info("sealed %d clear-text password(s) left by an older version", n)
    return n


@on_start(15, "sealed-secrets")
async def _start(core: Controller) -> None:
    _fernet(core)
    await seal_existing(core)
