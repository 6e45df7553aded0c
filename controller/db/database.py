"""The controller's SQLite database.

* WAL mode, ``synchronous=NORMAL``, foreign keys on, a busy timeout: readers never block the writer.
* ONE writer connection. Every multi-row change runs in ``async with db.write() as tx:`` — one
  ``BEGIN IMMEDIATE`` transaction, committed at the end of the block and rolled back on any exception.
  Writers are serialised by an asyncio lock, so there is never a "database is locked" error on the
  API path and no write is lost.
* A small pool of reader connections for queries (``async with db.read() as conn``), so queries run
  concurrently with writes.
* Numbered migrations (``controller/db/migrations/NNNN_name.sql``, or ``NNNN_name.py`` with
  ``async def migrate(conn)`` for changes SQL cannot compute) applied in order at open, each in one
  transaction with its ``schema_version`` row: the upgrade path.
* The database file and its ``-wal``/``-shm`` files are 0600 (they hold password hashes and host tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

_MIGRATION = re.compile(r"(\d{4})_[\w-]+\.(sql|py)")
FILE_MODE = 0o600


class SchemaTooNew(RuntimeError):
    """The database was written by a newer release (its schema version is above the newest migration here)."""


def _release() -> str:
    from controller.version import VERSION

    return VERSION


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped with the package, in order; a Python
    migration has an empty SQL text (its module's ``migrate(conn)`` runs instead)."""
    out = []
    for f in resources.files("controller.db.migrations").iterdir():
        m = _MIGRATION.fullmatch(f.name)
        if m:
            out.append((int(m.group(1)), f.name, f.read_text() if m.group(2) == "sql" else ""))
    out.sort()
    return out


def secure_files(path: str) -> None:
    """Create the database file 0600 if missing; make it and its -wal/-shm files 0600."""
    if path == ":memory:":
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE))
    for p in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(p, FILE_MODE)


async def _configure(conn: aiosqlite.Connection) -> None:
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=10000")
    await conn.execute("PRAGMA synchronous=NORMAL")


class Tx:
    """The writer connection inside one transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> aiosqlite.Cursor:
        return await self.conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def insert(self, table: str, row: dict[str, Any]) -> None:
        """INSERT one row; ``table`` and the keys come from code, never from the user."""
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        await self.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))

    async def update(self, table: str, key: dict[str, Any], values: dict[str, Any]) -> int:
        """UPDATE the row(s) matching ``key``; returns the number of rows changed."""
        sets = ", ".join(f"{k} = ?" for k in values)
        where = " AND ".join(f"{k} = ?" for k in key)
        cur = await self.conn.execute(f"UPDATE {table} SET {sets} WHERE {where}",
                                      (*values.values(), *key.values()))
        return cur.rowcount


class Database:
    def __init__(self, path: str | Path, *, readers: int = 4) -> None:
        self.path = str(path)
        self._nreaders = readers
        self._writer: aiosqlite.Connection | None = None
        self._wlock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []

    async def open(self) -> None:
        """Open the connections and apply pending migrations. Idempotent per instance."""
        if self._writer is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        secure_files(self.path)
        self._writer = await aiosqlite.connect(self.path, isolation_level=None)
        await self._writer.execute("PRAGMA journal_mode=WAL")
        secure_files(self.path)
        await _configure(self._writer)
        await self._migrate()
        for _ in range(self._nreaders):
            conn = await aiosqlite.connect(self.path, isolation_level=None)
            await _configure(conn)
            await conn.execute("PRAGMA query_only=ON")
            self._all_readers.append(conn)
            self._readers.put_nowait(conn)

    async def close(self) -> None:
        for conn in self._all_readers:
            await conn.close()
        self._all_readers.clear()
        self._readers = asyncio.Queue()
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    async def _migrate(self) -> None:
        assert self._writer is not None
        w = self._writer
        await w.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                        "name TEXT NOT NULL, appliedDate TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
        async with w.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = row[0] if row else 0
        shipped = migrations()
        newest = shipped[-1][0] if shipped else 0
        if current > newest:
            raise SchemaTooNew(f"database {self.path} has schema version {current}, newer than this code's "
                               f"{newest} (release {_release()}): run the release that wrote it, or restore a "
                               "backup taken before the upgrade (zstack-ctl restore)")
        for version, name, sql in shipped:
            if version <= current:
                continue
            log.info("applying schema migration %s", name)
            if name.endswith(".py"):
                module = importlib.import_module(f"controller.db.migrations.{name[:-3]}")
                await w.execute("BEGIN IMMEDIATE")
                try:
                    await module.migrate(w)
                    await w.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", (version, name))
                except BaseException:
                    await w.execute("ROLLBACK")
                    raise
                await w.execute("COMMIT")
                continue
            # executescript commits first; the migration and its version row are applied together.
            await w.executescript(f"BEGIN;\n{sql}\nINSERT INTO schema_version (version, name) "
                                  f"VALUES ({version}, '{name}');\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        return migrations()[-1][0]

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """One write transaction; commits on normal exit, rolls back on any exception."""
        if self._writer is None:
            raise RuntimeError("database is not open")
        async with self._wlock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._writer)
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            else:
                await self._writer.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A reader connection from the pool (read-only)."""
        conn = await self._readers.get()
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.read() as conn, conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.read() as conn, conn.execute(sql, params) as cur:
            return list(await cur.fetchall())
