"""IP address management of L3 networks: allocate one free IP, allocate a given IP, release, list free IPs.

Every function works inside the caller's transaction ``tx`` (e.g. VM creation allocates its NICs' IPs in
the same transaction as the NIC rows), so an allocation and what uses it commit or roll back together.

Guarantees:

* No Python scan of a range: the first free address at or after a point is found by one SQL statement
  over ``UsedIp(l3NetworkUuid, ipInLong)`` (the UNIQUE index), in O(used addresses of that range).
* An address is handed out at most once per L3: the UNIQUE(l3NetworkUuid, ipInLong) constraint is the
  final arbiter; a lost race (IntegrityError) is retried with the next free address.
* Strategies: ``random`` (1.0's default RandomIpAllocatorStrategy: a random point of a random range,
  then the first free address from there, wrapping around every range) and ``first`` (lowest free
  address of the first range that has one; predictable, used by tests and by the DHCP server IP).
* Addresses already taken (VM NICs, the flat DHCP server IP) are UsedIp rows, so they are never handed out.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from controller.db.database import Tx
from controller.errors import InvalidArgument, OperationError
from controller.resources.checks import ip_str, ipv4
from controller.util import new_uuid, now_iso

Strategy = Literal["random", "first"]
FetchAll = Callable[[str, Sequence[Any]], Awaitable[list[Any]]]
RETRIES = 8

_FIRST_FREE = (
    "SELECT MIN(c) FROM ("
    " SELECT ? AS c WHERE NOT EXISTS (SELECT 1 FROM UsedIp WHERE l3NetworkUuid=? AND ipInLong=?)"
    " UNION ALL"
    " SELECT u.ipInLong + 1 FROM UsedIp u WHERE u.l3NetworkUuid=? AND u.ipInLong >= ? AND u.ipInLong < ?"
    "  AND NOT EXISTS (SELECT 1 FROM UsedIp v WHERE v.l3NetworkUuid=? AND v.ipInLong = u.ipInLong + 1))")


async def ranges_of(fetchall: FetchAll, l3_uuid: str) -> list[dict[str, Any]]:
    rows = await fetchall("SELECT uuid, startInt, endInt, netmask, gateway FROM IpRange WHERE l3NetworkUuid=? "
                          "ORDER BY startInt", (l3_uuid,))
    return [dict(r) for r in rows]


async def first_free(tx: Tx, l3_uuid: str, lo: int, hi: int) -> int | None:
    """The lowest address in [lo, hi] with no UsedIp row on the L3, or None."""
    if lo > hi:
        return None
    row = await tx.fetchone(_FIRST_FREE, (lo, l3_uuid, lo, l3_uuid, lo, hi, l3_uuid))
    return row[0] if row is not None and row[0] is not None else None


def _windows(ranges: list[dict[str, Any]], strategy: Strategy, rng: random.Random) -> list[tuple[int, int, int]]:
    """(range index, lo, hi) windows to search in order."""
    if strategy == "first":
        return [(i, r["startInt"], r["endInt"]) for i, r in enumerate(ranges)]
    i = rng.randrange(len(ranges))
    p = rng.randint(ranges[i]["startInt"], ranges[i]["endInt"])
    rest = [(j % len(ranges)) for j in range(i + 1, i + len(ranges))]
    return ([(i, p, ranges[i]["endInt"])] + [(j, ranges[j]["startInt"], ranges[j]["endInt"]) for j in rest]
            + [(i, ranges[i]["startInt"], p - 1)])


async def _search(tx: Tx, l3_uuid: str, windows: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """(range index, address) of the first free address over the windows in order."""
    for i, lo, hi in windows:
        n = await first_free(tx, l3_uuid, lo, hi)
        if n is not None:
            return i, n
    return None


async def _insert(tx: Tx, l3_uuid: str, rng_row: dict[str, Any], n: int, used_for: str | None) -> dict[str, Any]:
    now = now_iso()
    row = {"uuid": new_uuid(), "ipRangeUuid": rng_row["uuid"], "l3NetworkUuid": l3_uuid, "ip": ip_str(n),
           "ipInLong": n, "gateway": rng_row["gateway"], "netmask": rng_row["netmask"], "usedFor": used_for,
           "createDate": now, "lastOpDate": now}
    await tx.insert("UsedIp", row)
    return row


async def allocate(tx: Tx, l3_uuid: str, *, strategy: Strategy = "random", used_for: str | None = None,
                   rng: random.Random | None = None) -> dict[str, Any]:
    """Take one free address of the L3 and return its new UsedIp row.

    409 SYS.1006 when the L3 has no range or every address is used."""
    ranges = await ranges_of(tx.fetchall, l3_uuid)
    if not ranges:
        raise OperationError(f"L3 network[uuid:{l3_uuid}] has no IP range; add one with AddIpRange")
    rng = rng or random.Random()
    for _ in range(RETRIES):
        found = await _search(tx, l3_uuid, _windows(ranges, strategy, rng))
        if found is None:
            raise OperationError(f"cannot find available ip on L3 network[uuid:{l3_uuid}]: every address of its "
                                 f"{len(ranges)} IP range(s) is used")
        try:
            return await _insert(tx, l3_uuid, ranges[found[0]], found[1], used_for)
        except sqlite3.IntegrityError:
            continue  # taken between the search and the insert: search again
    raise OperationError(f"could not allocate an IP on L3 network[uuid:{l3_uuid}] after {RETRIES} attempts")


async def allocate_ip(tx: Tx, l3_uuid: str, ip: str, *, used_for: str | None = None,
                      field: str = "staticIp") -> dict[str, Any]:
    """Take the given address (a staticIp) and return its UsedIp row.

    400 when it is not IPv4 or in no range of the L3; 409 when it is already used."""
    n = ipv4(ip, field)
    row = await tx.fetchone("SELECT uuid, startInt, endInt, netmask, gateway FROM IpRange WHERE l3NetworkUuid=? "
                            "AND startInt<=? AND endInt>=?", (l3_uuid, n, n))
    if row is None:
        raise InvalidArgument(f"{field}[{ip}] is not inside any IP range of L3 network[uuid:{l3_uuid}]")
    try:
        return await _insert(tx, l3_uuid, dict(row), n, used_for)
    except sqlite3.IntegrityError:
        raise OperationError(f"IP[{ip}] of L3 network[uuid:{l3_uuid}] is already used") from None


async def release(tx: Tx, used_ip_uuid: str) -> bool:
    """Return an address to its L3; True when it was allocated (releasing twice is harmless)."""
    cur = await tx.execute("DELETE FROM UsedIp WHERE uuid=?", (used_ip_uuid,))
    return cur.rowcount > 0


async def free_ips(fetchall: FetchAll, l3_uuid: str, ranges: list[dict[str, Any]], start: int,
                   limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` free addresses at or after ``start``, range by range, in address order.

    Reads used addresses in index order in batches: cost O(limit + used addresses skipped)."""
    out: list[dict[str, Any]] = []
    batch = 256
    for r in ranges:
        cur, end = max(r["startInt"], start), r["endInt"]
        while cur <= end and len(out) < limit:
            used = [u[0] for u in await fetchall(
                "SELECT ipInLong FROM UsedIp WHERE l3NetworkUuid=? AND ipInLong BETWEEN ? AND ? "
                "ORDER BY ipInLong LIMIT ?", (l3_uuid, cur, end, batch))]
            for u in [*used, end + 1] if len(used) < batch else used:
                while cur < u and len(out) < limit:
                    out.append({"ipRangeUuid": r["uuid"], "ip": ip_str(cur), "netmask": r["netmask"],
                                "gateway": r["gateway"]})
                    cur += 1
                cur = max(cur, u + 1)
            if len(used) < batch:
                break
    return out
