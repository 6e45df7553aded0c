"""Account passwords: 1.0's bare SHA-512 hex digests become salted scrypt hashes of that digest
(:mod:`controller.passwords`), so a leaked database no longer holds a usable login and no stored value is
accepted as a password."""

from __future__ import annotations

import asyncio

import aiosqlite

from controller.passwords import hash_digest, is_legacy


async def migrate(conn: aiosqlite.Connection) -> None:
    async with conn.execute("SELECT uuid, passwordHash FROM Account") as cur:
        rows = list(await cur.fetchall())
    for row in rows:
        uuid, stored = row[0], row[1]
        if is_legacy(stored):
            new = await asyncio.to_thread(hash_digest, stored.lower())
            await conn.execute("UPDATE Account SET passwordHash=? WHERE uuid=?", (new, uuid))
