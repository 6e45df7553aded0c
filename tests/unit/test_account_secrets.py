"""Issue #18 security 6 (accounts and files): salted slow password hashes, the stored hash is no password,
1.0 rows migrated, the controller database 0600."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apiclient import Api

from controller.api.http import CORE
from controller.app import create_app
from controller.config import ControllerConfig
from controller.db import Database
from controller.identity import ADMIN_UUID

DIGEST = hashlib.sha512(b"password").hexdigest()


async def _stored(api: Api) -> str:
    row = await api.client.app[CORE].db.fetchone("SELECT passwordHash FROM Account WHERE uuid=?", (ADMIN_UUID,))
    assert row is not None
    return str(row["passwordHash"])


async def test_password_is_stored_salted_and_slow(api: Api) -> None:
    stored = await _stored(api)
    assert stored.startswith("scrypt$") and DIGEST not in stored and "password" not in stored
    # Both forms 1.0 knows still log in.
    for pw in ("password", DIGEST, DIGEST.upper()):
        s, _b = await api.raw("LogInByAccount", session=False, accountName="admin", password=pw)
        assert s == 200


async def test_the_stored_hash_is_not_a_password(api: Api) -> None:
    stored = await _stored(api)
    s, b = await api.raw("LogInByAccount", session=False, accountName="admin", password=stored)
    assert s == 401 and b["error"]["code"] == "ID.1000"


async def test_two_accounts_with_one_password_differ(tmp_path: Path) -> None:
    from controller.passwords import hash_password, verify

    a, b = hash_password("same"), hash_password("same")
    assert a != b and verify(a, "same") and verify(b, hashlib.sha512(b"same").hexdigest())
    assert not verify(a, "other") and not verify(a, a)


async def test_1_0_sha512_rows_are_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.db import database

    path = tmp_path / "old.db"
    every = database.migrations()
    # a database of the schema before 0003 (the later migrations stay out until the controller opens it below)
    monkeypatch.setattr(database, "migrations", lambda: [m for m in every if m[0] < 3])
    db = Database(path)
    await db.open()
    async with db.write() as tx:
        await tx.insert("Account", {"uuid": ADMIN_UUID, "name": "admin", "type": "SystemAdmin",
                                    "passwordHash": DIGEST, "createDate": "2015-01-01T00:00:00.000Z",
                                    "lastOpDate": "2015-01-01T00:00:00.000Z"})
    await db.close()
    monkeypatch.setattr(database, "migrations", lambda: every)
    config = ControllerConfig(db_path=str(path), log_dir=str(tmp_path / "log"))
    async with TestClient(TestServer(create_app(config))) as client:
        api = Api(client)
        stored = await _stored(api)
        assert stored.startswith("scrypt$")
        await api.login()
        s, _b = await api.raw("LogInByAccount", session=False, accountName="admin", password=stored)
        assert s == 401
        versions = [r["version"] for r in await client.app[CORE].db.fetchall("SELECT version FROM schema_version")]
        assert 3 in versions


async def test_database_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    old = os.umask(0o022)
    try:
        db = Database(path)
        await db.open()
        async with db.write() as tx:
            await tx.execute("INSERT INTO GlobalConfig (category, name, value, defaultValue) "
                             "VALUES ('a', 'b', 'c', 'd')")
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert p.exists() and stat.S_IMODE(p.stat().st_mode) == 0o600, p
        await db.close()
        # A database an older version left world-readable is tightened at open.
        path.chmod(0o644)
        db = Database(path)
        await db.open()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        await db.close()
    finally:
        os.umask(old)
