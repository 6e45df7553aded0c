"""Run compiled queries and assemble ZStack 1.0 inventories.

Guarantees:

* The rows of a page come from one statement; each embedded child relation costs one more statement per
  500 parent keys for the whole page (``WHERE fk IN (...)``), and nested children (L3Network → ipRanges)
  likewise, so a page never issues a query per row.
* Hidden columns are never selected; INTEGER booleans become JSON booleans; scalar lists are flattened;
  a child list with no rows is ``[]``.
* The connection's ``row_factory`` is not relied on nor changed: each cursor reads plain tuples.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import aiosqlite

from controller.errors import InvalidArgument
from controller.query.compiler import _Ctx, base_filter_sql, compile_query, q, source_sql
from controller.query.models import Condition, QueryMsg
from controller.query.schema import RESOURCES, Child, Resource

CHUNK = 500
Key = str | int | tuple[Any, ...]


def _resource(name: str) -> Resource:
    try:
        return RESOURCES[name]
    except KeyError:
        raise InvalidArgument(
            f"resource[{name}] is not queryable; queryable resources are {sorted(RESOURCES)}") from None


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


async def fetch_dicts(db: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of ``sql`` as dicts keyed by the result's column names, whatever the connection's row_factory."""
    async with db.execute(sql, params) as cur:
        cur.row_factory = None  # type: ignore[assignment]
        rows = await cur.fetchall()
        names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in rows]


def _convert(r: Resource, row: dict[str, Any]) -> dict[str, Any]:
    for name in r.bools:
        if row.get(name) is not None:
            row[name] = bool(row[name])
    return row


async def _child_rows(db: aiosqlite.Connection, child: Child, keys: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of one child relation for the given parent keys, each with the parent key in ``__fk``."""
    a, ctx = "c", _Ctx()
    assert child.table is not None
    order = ", ".join([*(f"{a}.{q(o)}" for o in child.order_by), f"{a}.rowid"])
    if child.scalar:
        select, src, where = f"{a}.{q(child.scalar)} AS {q('value')}", q(child.table), []
    else:
        assert child.resource is not None
        target = RESOURCES[child.resource]
        select = ", ".join(f"{a}.{q(target.column_of(f))} AS {q(f)}" for f in target.columns)
        src, where = source_sql(target), base_filter_sql(target, a, ctx)
    where.append(f"{a}.{q(child.fk)} IN ({', '.join('?' * len(keys))})")
    sql = (f"SELECT {a}.{q(child.fk)} AS {q('__fk')}, {select} FROM {src} {a} "
           f"WHERE {' AND '.join(where)} ORDER BY {order}")
    return await fetch_dicts(db, sql, [*ctx.params, *keys])


async def _embed(db: aiosqlite.Connection, r: Resource, invs: list[dict[str, Any]]) -> None:
    """Fill every child list of ``invs`` (in place), recursing into children of children."""
    for child in r.children:
        if not child.embed:
            continue
        if child.table is None or not invs:
            for inv in invs:
                inv[child.name] = []
            continue
        keys = list(dict.fromkeys(k for inv in invs if (k := inv.get(child.parent_key)) is not None))
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(keys):
            rows.extend(await _child_rows(db, child, chunk))
        groups: dict[Any, list[Any]] = defaultdict(list)
        if child.scalar:
            for row in rows:
                groups[row["__fk"]].append(row["value"])
        else:
            target = RESOURCES[child.resource or ""]
            for row in rows:
                groups[row.pop("__fk")].append(_convert(target, row))
            await _embed(db, target, rows)
        for inv in invs:
            inv[child.name] = groups.get(inv.get(child.parent_key), [])


async def query(db: aiosqlite.Connection, resource_name: str, msg: QueryMsg) -> dict[str, Any]:
    """Answer a ``Query<resource_name>`` API in 1.0's reply shape.

    ``{"success": true, "inventories": [...]}``, plus ``"total"`` (all matches, ignoring limit/start)
    with ``replyWithCount``; with ``count`` only ``{"success": true, "total": N}``. Raises
    InvalidArgument (400) for any bad field, operator, value, ``fields`` entry or ``sortBy``.
    """
    r = _resource(resource_name)
    compiled = compile_query(r, msg)
    reply: dict[str, Any] = {"success": True}
    if compiled.sql is not None:
        invs = [_convert(r, row) for row in await fetch_dicts(db, compiled.sql, compiled.params)]
        if compiled.embed_children:
            await _embed(db, r, invs)
        reply["inventories"] = invs
    if compiled.count_sql is not None:
        async with db.execute(compiled.count_sql, compiled.count_params) as cur:
            row = await cur.fetchone()
        assert row is not None
        reply["total"] = int(row[0])
    return reply


def _key_conditions(r: Resource, key: Key) -> list[Condition]:
    values = key if isinstance(key, tuple) else (key,)
    if len(values) != len(r.key):
        raise InvalidArgument(f"key {key!r} of {r.name} must have {len(r.key)} part(s): {list(r.key)}")
    return [Condition(name=f, op="=", value=v) for f, v in zip(r.key, values, strict=True)]


async def get_inventory(db: aiosqlite.Connection, resource_name: str, key: Key) -> dict[str, Any] | None:
    """The inventory whose key (``uuid``; a tuple for composite keys, e.g. GlobalConfig's
    ``(category, name)``) is ``key``, or None when there is none."""
    r = _resource(resource_name)
    reply = await query(db, resource_name, QueryMsg(conditions=_key_conditions(r, key), limit=1))
    invs = reply["inventories"]
    return invs[0] if invs else None


async def get_inventories(
        db: aiosqlite.Connection, resource_name: str, keys: Sequence[Key]) -> list[dict[str, Any]]:
    """Inventories for ``keys`` in the order given (missing keys are skipped, duplicates answered once)."""
    r = _resource(resource_name)
    unique = list(dict.fromkeys(keys))
    if len(r.key) != 1:
        found = [await get_inventory(db, resource_name, k) for k in unique]
        return [inv for inv in found if inv is not None]
    by_key: dict[Any, dict[str, Any]] = {}
    for chunk in _chunks(unique):
        cond = Condition(name=r.key[0], op="in", value=[k for k in chunk if not isinstance(k, tuple)])
        reply = await query(db, resource_name, QueryMsg(conditions=[cond], limit=len(chunk)))
        by_key.update((inv[r.key[0]], inv) for inv in reply["inventories"])
    return [by_key[k] for k in unique if k in by_key]
