"""Compile a :class:`QueryMsg` for a :class:`Resource` into parameterized SQL.

Guarantees:

* Values are always bound parameters; identifiers come only from :mod:`controller.query.schema` (plain
  identifiers checked at import). A user-supplied field name is looked up in the schema and rejected with
  :class:`InvalidArgument` (400) when unknown, so it never reaches SQL.
* Dotted names walk ``children`` (one-to-many) and ``refs`` (many-to-one) and compile to
  ``key IN (SELECT fk FROM other WHERE <cond>)``, which SQLite answers through the indexes on either side
  (an equivalent of ``EXISTS`` that the planner can drive from the inner index instead of scanning the
  outer table).
* Nested negative operators keep 1.0's join semantics: the operator applies to the related row, so
  ``vmNics.ip!=X`` means "has a NIC whose ip is not X" (a VM without NICs does not match), and
  ``host.name!=h1`` means "has a host, named other than h1".
* Tag filters (``__systemTag__``/``__userTag__``) are about the set of tags of the resource: positive
  operators (``=``, ``like``, ``in``, comparisons) mean "has a tag matching"; negative ones (``!=``,
  ``not like``, ``not in``) mean "has NO tag matching the positive form" (``NOT IN``); ``is not null``
  means "has any tag", ``is null`` "has no tag".
* Comparisons on primitive columns follow SQL: ``!=``/``not in``/``not like`` never match NULL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.errors import InvalidArgument
from controller.query.models import OPERATORS, Condition, QueryMsg, Scalar, canonical_op
from controller.query.schema import RESOURCES, ColType, Resource

TAG_FIELDS = {"__systemTag__": "SystemTag", "__userTag__": "UserTag"}
_NEGATIVE = {"!=": "=", "not in": "in", "not like": "like", "is null": "is not null"}
_COMPARE = {"=", "!=", ">", "<", ">=", "<="}


def q(ident: str) -> str:
    """Quote an identifier taken from the schema (never from user input)."""
    return f'"{ident}"'


@dataclass
class CompiledQuery:
    """SQL for one query: ``sql`` (None when only the count is asked), ``count_sql`` (None unless a total
    is asked), their parameters, the inventory fields selected and whether children are embedded."""

    sql: str | None
    params: list[Any]
    count_sql: str | None
    count_params: list[Any]
    fields: list[str]
    embed_children: bool


@dataclass
class _Ctx:
    """Alias allocator and parameter list for one statement (parameters in textual order)."""

    params: list[Any] = field(default_factory=list)
    n: int = 0

    def alias(self) -> str:
        self.n += 1
        return f"t{self.n}"


def source_sql(r: Resource) -> str:
    """The FROM source of a resource: its table, or the UNION ALL of its tables (QueryTag)."""
    if not r.union_of:
        return q(r.table)
    cols = ", ".join(q(r.column_of(f)) for f in r.columns)
    return "(" + " UNION ALL ".join(f"SELECT {cols} FROM {q(t)}" for t in r.union_of) + ")"


def base_filter_sql(r: Resource, alias: str, ctx: _Ctx) -> list[str]:
    if r.base_filter is None:
        return []
    col, value = r.base_filter
    ctx.params.append(value)
    return [f"{alias}.{q(col)} = ?"]


def queryable_fields(r: Resource) -> list[str]:
    """What a condition may name on ``r``: primitives, scalar lists, ``child.*`` and ``ref.*``."""
    names = list(r.columns)
    names += [c.name if c.scalar else f"{c.name}.*" for c in r.children if c.table]
    names += [f"{ref.name}.*" for ref in r.refs]
    if "uuid" in r.columns:
        names += list(TAG_FIELDS)
    return names


def _unknown_field(r: Resource, full: str, head: str) -> InvalidArgument:
    return InvalidArgument(
        f"condition field[{full}] is not queryable: {r.name} has no field[{head}]; "
        f"queryable fields of {r.name} are {queryable_fields(r)}")


def _bad_value(full: str, value: Any, expected: str) -> InvalidArgument:
    return InvalidArgument(f"value[{value!r}] of condition field[{full}] is not {expected}")


def coerce(coltype: ColType, value: Any, full: str) -> Any:
    """Convert a condition value to the column's storage type; 400 naming the field and value if it can't."""
    if isinstance(value, list):
        raise _bad_value(full, value, "a single value (lists are for the in/not in operators)")
    if coltype == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _bad_value(full, value, "an integer")
    if coltype == "bool":
        text = str(value).strip().lower()
        if text in ("true", "1"):
            return 1
        if text in ("false", "0"):
            return 0
        raise _bad_value(full, value, "a boolean (true or false)")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _in_values(value: Scalar | list[Scalar] | None, full: str, op: str) -> list[Scalar]:
    values: list[Scalar]
    if isinstance(value, str):
        values = list(value.split(","))
    elif isinstance(value, list):
        values = value
    else:
        values = [] if value is None else [value]
    if not values:
        raise InvalidArgument(f"condition field[{full}] with op[{op}] needs a non-empty list of values")
    return values


def predicate(expr: str, coltype: ColType, op: str, value: Any, full: str, ctx: _Ctx) -> str:
    """``expr <op> ?`` with the value coerced to ``coltype`` and appended to the parameters."""
    if op == "is null":
        return f"{expr} IS NULL"
    if op == "is not null":
        return f"{expr} IS NOT NULL"
    if op in ("in", "not in"):
        values = [coerce(coltype, v, full) for v in _in_values(value, full, op)]
        ctx.params.extend(values)
        return f"{expr} {op.upper()} ({', '.join('?' * len(values))})"
    if value is None:
        raise InvalidArgument(f"condition field[{full}] with op[{op}] needs a value")
    if op in ("like", "not like"):
        if isinstance(value, list):
            raise _bad_value(full, value, "a single pattern")
        ctx.params.append(coerce("str", value, full))
        return f"{expr} {op.upper()} ?"
    ctx.params.append(coerce(coltype, value, full))
    return f"{expr} {op} ?"


def _subquery(outer: str, inner_col: str, src: str, alias: str, where: list[str]) -> str:
    return f"{outer} IN (SELECT {alias}.{q(inner_col)} FROM {src} {alias} WHERE {' AND '.join(where)})"


def _condition(r: Resource, alias: str, parts: list[str], op: str, value: Any, full: str, ctx: _Ctx) -> str:
    """Compile one condition whose (remaining) dotted name is ``parts`` against ``r`` aliased ``alias``."""
    head, rest = parts[0], parts[1:]
    child, ref = r.child(head), r.ref(head)
    if not rest and head in r.columns:
        return predicate(f"{alias}.{q(r.column_of(head))}", r.columns[head], op, value, full, ctx)
    if not rest and child is not None and child.table and child.scalar:
        a = ctx.alias()
        inner = predicate(f"{a}.{q(child.scalar)}", "str", op, value, full, ctx)
        return _subquery(f"{alias}.{q(child.parent_key)}", child.fk, q(child.table), a, [inner])
    if rest and child is not None and child.resource:
        target, a = RESOURCES[child.resource], ctx.alias()
        where = base_filter_sql(target, a, ctx)
        where.append(_condition(target, a, rest, op, value, full, ctx))
        return _subquery(f"{alias}.{q(child.parent_key)}", child.fk, source_sql(target), a, where)
    if rest and ref is not None:
        target, a = RESOURCES[ref.resource], ctx.alias()
        where = base_filter_sql(target, a, ctx)
        where.append(_condition(target, a, rest, op, value, full, ctx))
        return _subquery(f"{alias}.{q(ref.column)}", ref.target_key, source_sql(target), a, where)
    raise _unknown_field(r, full, head)


def _tag_condition(r: Resource, alias: str, table: str, op: str, value: Any, full: str, ctx: _Ctx) -> str:
    """Tag filter: see the module docstring for the semantics of negative operators."""
    if "uuid" not in r.columns:
        raise InvalidArgument(f"condition field[{full}] is not queryable: {r.name} has no uuid to carry tags")
    a = ctx.alias()
    positive = _NEGATIVE.get(op, op)
    inner = predicate(f"{a}.{q('tag')}", "str", positive, value, full, ctx)
    outer = f"{alias}.{q(r.column_of('uuid'))}"
    sub = f"(SELECT {a}.{q('resourceUuid')} FROM {q(table)} {a} WHERE {inner})"
    return f"{outer} {'NOT IN' if op in _NEGATIVE else 'IN'} {sub}"


def compile_conditions(r: Resource, alias: str, conditions: list[Condition], ctx: _Ctx) -> list[str]:
    """WHERE terms (AND-ed) for the base filter and every condition."""
    terms = base_filter_sql(r, alias, ctx)
    for cond in conditions:
        op = canonical_op(cond.op)
        if op is None:
            raise InvalidArgument(f"condition field[{cond.name}] has an invalid op[{cond.op}]; "
                                  f"valid ops are {sorted(OPERATORS)}")
        if cond.name in TAG_FIELDS:
            terms.append(_tag_condition(r, alias, TAG_FIELDS[cond.name], op, cond.value, cond.name, ctx))
        else:
            terms.append(_condition(r, alias, cond.name.split("."), op, cond.value, cond.name, ctx))
    return terms


def _primitives(r: Resource, names: list[str], what: str) -> list[str]:
    out: list[str] = []
    for name in names:
        if name not in r.columns:
            raise InvalidArgument(
                f"{what}[{name}] is not a primitive of the inventory {r.name}; "
                f"primitive fields are {list(r.columns)}")
        if name not in out:
            out.append(name)
    return out


def _order_by(r: Resource, msg: QueryMsg, alias: str) -> str:
    """ORDER BY for ``sortBy`` (ties broken by rowid in the same direction, so paging is stable)."""
    if msg.sortBy is not None:
        if msg.sortBy not in r.columns:
            raise InvalidArgument(
                f"illegal sortBy[{msg.sortBy}]: it must be a primitive field of the inventory {r.name}, "
                f"one of {list(r.columns)}")
        direction = msg.sortDirection.upper()
        tie = "" if r.union_of else f", {alias}.rowid {direction}"
        return f" ORDER BY {alias}.{q(r.column_of(msg.sortBy))} {direction}{tie}"
    # No sortBy: no ORDER BY (1.0 did not sort either). The planner stays free to drive the query from
    # the most selective index instead of scanning in rowid order to spare a sort; the order is then the
    # plan's, the same for the same statement, so limit/start paging is consistent.
    return ""

def compile_query(r: Resource, msg: QueryMsg) -> CompiledQuery:
    """Compile ``msg`` against ``r``; raises InvalidArgument (400) for any bad field, op, value or sortBy."""
    alias, ctx = "p", _Ctx()
    terms = compile_conditions(r, alias, msg.conditions, ctx)
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    src = f"{source_sql(r)} {alias}"
    fields = _primitives(r, msg.fields, "field") if msg.fields else list(r.columns)
    order = _order_by(r, msg, alias)
    want_total = msg.count or msg.replyWithCount
    count_sql = f"SELECT COUNT(*) FROM {src}{where}" if want_total else None
    if msg.count:
        return CompiledQuery(None, [], count_sql, list(ctx.params), fields, False)
    select = ", ".join(f"{alias}.{q(r.column_of(f))} AS {q(f)}" for f in fields)
    sql = f"SELECT {select} FROM {src}{where}{order} LIMIT ? OFFSET ?"
    params = [*ctx.params, msg.limit, msg.start]
    return CompiledQuery(sql, params, count_sql, list(ctx.params), fields, not msg.fields)
