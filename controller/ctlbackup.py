"""``zstack-ctl backup [path]`` / ``zstack-ctl restore <path>``: the controller database, safely.

* backup: SQLite's online backup API copies a consistent snapshot while the controller keeps running (one
  read transaction, WAL readers never block the writer); the copy is a self-contained file (no -wal), made
  0600 (it holds password hashes and host tokens), checked with ``PRAGMA integrity_check`` before it is
  renamed into place. Default path: ``<db dir>/backups/controller-<UTC time>.db``.
* restore: refused while the controller runs (``--stop`` stops it first); the file must pass
  ``integrity_check`` and carry a schema this version knows (not newer; older ones migrate at the next
  start). The current database is kept next to it as ``<db>.before-restore-<UTC time>`` (0600).
* the TLS directory (``pki/``: the CA, the controller's and the hosts' certificates and keys) goes with the
  database: ``<backup>.pki.tar`` (0600) beside the backup file (:func:`backup_pki`); a restore puts it back
  (:func:`restore_pki`: directories 0700, files 0600, the current one kept as ``pki.before-restore-<time>``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from controller.db.database import FILE_MODE, migrations


class BackupError(Exception):
    pass


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _new_file(path: Path) -> None:
    """Create ``path`` empty and 0600 (refusing an existing one)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def _copy(src_path: Path, dst_path: Path) -> None:
    """Online backup of ``src_path`` into the new 0600 file ``dst_path``, as one rollback-journal file."""
    _new_file(dst_path)
    src = sqlite3.connect(src_path, timeout=30)  # read-write open: a WAL database needs its -shm
    try:
        dst = sqlite3.connect(dst_path)
        try:
            src.backup(dst)  # all pages in one step: one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.commit()
        finally:
            dst.close()
    finally:
        src.close()


def inspect(path: Path) -> int:
    """The schema version of a database file, after checking its integrity (BackupError otherwise)."""
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            if check != ["ok"]:
                raise BackupError(f"{path} fails SQLite's integrity check: {'; '.join(map(str, check[:5]))}")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            conn.execute("SELECT COUNT(*) FROM Account").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise BackupError(f"{path} is not a ZStack-Py controller database: {e}") from e
    version = int(row[0] or 0) if row else 0
    newest = migrations()[-1][0]
    if version > newest:
        raise BackupError(f"{path} has schema version {version}, newer than this controller's {newest}; "
                          "restore it with the version that made it")
    if version < 1:
        raise BackupError(f"{path} has no schema version; it is not a controller database")
    return version


def set_aside(db: Path, label: str) -> Path | None:
    """Move the database with its -wal/-shm to ``<db>.<label>-<UTC time>`` (0600), so that nothing of it meets the
    file put in its place; a -wal/-shm without a database is deleted. Returns the kept path (None: no database)."""
    kept = None
    if db.exists():
        kept = db.with_name(f"{db.name}.{label}-{stamp()}")
        os.replace(db, kept)
        os.chmod(kept, FILE_MODE)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{db}{suffix}")
        if side.exists():
            if kept is not None:
                os.replace(side, Path(f"{kept}{suffix}"))
            else:
                side.unlink()
    return kept


def backup(db_path: str, target: str | None) -> Path:
    src = Path(db_path)
    if not src.is_file():
        raise BackupError(f"no controller database at {src}")
    dst = Path(target) if target else src.parent / "backups" / f"controller-{stamp()}.db"
    if dst.is_dir():
        dst = dst / f"controller-{stamp()}.db"
    if dst.exists():
        raise BackupError(f"{dst} exists; choose another path (a backup never overwrites a file)")
    dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _part_of(dst) as tmp:
        _copy(src, tmp)
        inspect(tmp)
        os.replace(tmp, dst)
    return dst


@contextlib.contextmanager
def _part_of(dst: Path) -> Iterator[Path]:
    """``.<name>.part`` beside ``dst`` (a stale one removed first), which the block writes and renames onto
    ``dst``; removed if the block fails."""
    tmp = dst.with_name(f".{dst.name}.part")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def restore(db_path: str, source: str) -> tuple[int, Path | None]:
    """Replace the (stopped) controller's database with ``source``; returns (schema version, kept old db)."""
    src = Path(source)
    version = inspect(src)
    db = Path(db_path)
    db.parent.mkdir(parents=True, exist_ok=True)
    tmp = db.with_name(f".{db.name}.restore")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        _copy(src, tmp)
        inspect(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    kept = set_aside(db, "before-restore")
    os.replace(tmp, db)
    return version, kept


PKI_SUFFIX = ".pki.tar"


def pki_dir(cfg: Any) -> Path:
    """The controller's TLS directory (``controller.tls.tls_dir``, without importing the TLS stack)."""
    return Path(cfg.tls_dir) if cfg.tls_dir else Path(cfg.db_path).parent / "pki"

DIR_MODE = 0o700


def pki_archive(backup_path: Path) -> Path:
    """Where the TLS directory of the backup ``backup_path`` is kept."""
    return backup_path.with_name(backup_path.name + PKI_SUFFIX)


def backup_pki(pki_dir: Path, backup_path: Path) -> Path | None:
    """Archive ``pki_dir`` (regular files and directories only) as :func:`pki_archive` of ``backup_path``, a new
    0600 file; None when there is no such directory (a release before 0.2.0 had none)."""
    if not pki_dir.is_dir():
        return None
    dst = pki_archive(backup_path)
    with _part_of(dst) as tmp:
        _new_file(tmp)
        with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
            for path in sorted([pki_dir, *pki_dir.rglob("*")]):
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    continue  # nothing else belongs there
                name = "pki" if path == pki_dir else f"pki/{path.relative_to(pki_dir)}"
                tar.add(path, arcname=name, recursive=False)
            f.flush()
            os.fsync(f.fileno())
        if dst.exists():
            raise BackupError(f"{dst} exists; a backup never overwrites a file")
        os.replace(tmp, dst)
    return dst


def _pki_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if (m.name.startswith("/") or ".." in parts or not parts or parts[0] != "pki"
                or not (m.isfile() or m.isdir())):
            raise BackupError(f"{archive}: unexpected member {m.name!r} (only files and directories under pki/)")
    return members


def restore_pki(archive: Path, pki_dir: Path) -> Path | None:
    """Put the TLS directory of ``archive`` (:func:`backup_pki`) in place of ``pki_dir``: directories 0700, files
    0600 whatever the archive says; the current directory is kept as ``<pki_dir>.before-restore-<time>``
    (returned; None when there was none)."""
    tmp = pki_dir.with_name(f".{pki_dir.name}.restoring")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive, mode="r:") as tar:
            members = _pki_members(tar, archive)
            os.mkdir(tmp, DIR_MODE)
            for m in members:
                rel = Path(*Path(m.name).parts[1:]) if len(Path(m.name).parts) > 1 else None
                if rel is None:
                    continue
                target = tmp / rel
                if m.isdir():
                    target.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                src = tar.extractfile(m)
                data = src.read() if src is not None else b""
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
                with io.FileIO(fd, "w") as f:
                    f.write(data)
                    os.fsync(f.fileno())
        for d in [tmp, *(x for x in tmp.rglob("*") if x.is_dir())]:
            os.chmod(d, DIR_MODE)
    except (OSError, tarfile.TarError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BackupError(f"cannot restore the TLS directory from {archive}: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kept = None
    if pki_dir.exists():
        kept = pki_dir.with_name(f"{pki_dir.name}.before-restore-{stamp()}")
        os.replace(pki_dir, kept)
        os.chmod(kept, DIR_MODE)
    os.replace(tmp, pki_dir)
    return kept
