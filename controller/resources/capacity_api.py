"""The 1.0 dashboard's capacity helpers: ``GetCpuMemoryCapacity``, ``GetPrimaryStorageCapacity``,
``GetBackupStorageCapacity``, ``GetIpAddressCapacity``.

Each takes 1.0's optional uuid lists plus ``all``; every figure is one aggregate SQL statement (``SUM`` /
``COUNT`` over indexed joins), never rows loaded into Python. 1.0's rules:

* at least one non-empty list or ``all=true``, else 400 SYS.1007 with 1.0's text; ``all=true`` ignores the
  lists and covers everything;
* when several lists are given the most specific one wins, as in 1.0's handlers (hosts before clusters
  before zones; primary storages before clusters before zones; backup storages before zones; IP ranges before
  L3 networks before zones);
* every uuid must exist (404 SYS.1003 naming the field and the missing uuids);
* CPU/memory counts only hosts that are Enabled and Connected (1.0's ``HostCapacityVO`` join); CPU is in MHz
  (cores x MHz), memory in bytes;
* a storage counted through a cluster or a zone is counted once even when several of the given clusters
  reach it (``uuid IN (SELECT ...)``, not a join that would repeat it);
* IP capacity: total = the size of every range (``endInt - startInt + 1``), available = total minus the
  IPs in use inside those ranges (the flat DHCP server's IP counts as used, as 1.0's ``UsedIpVO`` did).
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.errors import InvalidArgument, NotFound


class CapacityMsg(ApiMessage):
    all: bool = False

    def pick(self, *fields: str) -> tuple[str, list[str]] | None:
        """The most specific non-empty list among ``fields`` (given most specific first), or None for all."""
        if self.all:
            return None
        for f in fields:
            v = getattr(self, f)
            if v:
                return f, list(dict.fromkeys(v))
        raise InvalidArgument(f"{', '.join(fields)} must at least have one be none-empty list, or all is set "
                              "to true")


def _either(*lists: str) -> ConfigDict:
    """The schema states the rule: ``all`` true or at least one of ``lists`` non-empty."""
    choices: list[Any] = [{"required": ["all"], "properties": {"all": {"const": True}}}]
    choices += [{"required": [f], "properties": {f: {"type": "array", "minItems": 1}}} for f in lists]
    return ConfigDict(extra="forbid", json_schema_extra={"anyOf": choices})


class GetCpuMemoryCapacityMsg(CapacityMsg):
    model_config = _either("zoneUuids", "clusterUuids", "hostUuids")

    zoneUuids: list[Uuid] | None = None
    clusterUuids: list[Uuid] | None = None
    hostUuids: list[Uuid] | None = None


class GetPrimaryStorageCapacityMsg(CapacityMsg):
    model_config = _either("zoneUuids", "clusterUuids", "primaryStorageUuids")

    zoneUuids: list[Uuid] | None = None
    clusterUuids: list[Uuid] | None = None
    primaryStorageUuids: list[Uuid] | None = None


class GetBackupStorageCapacityMsg(CapacityMsg):
    model_config = _either("zoneUuids", "backupStorageUuids")

    zoneUuids: list[Uuid] | None = None
    backupStorageUuids: list[Uuid] | None = None


class GetIpAddressCapacityMsg(CapacityMsg):
    model_config = _either("zoneUuids", "l3NetworkUuids", "ipRangeUuids")

    zoneUuids: list[Uuid] | None = None
    l3NetworkUuids: list[Uuid] | None = None
    ipRangeUuids: list[Uuid] | None = None


_TABLE = {"zoneUuids": ("Zone", "ZoneVO"), "clusterUuids": ("Cluster", "ClusterVO"),
          "hostUuids": ("Host", "HostVO"), "primaryStorageUuids": ("PrimaryStorage", "PrimaryStorageVO"),
          "backupStorageUuids": ("BackupStorage", "BackupStorageVO"), "l3NetworkUuids": ("L3Network", "L3NetworkVO"),
          "ipRangeUuids": ("IpRange", "IpRangeVO")}


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


async def _exist(ctx: ApiContext, field: str, uuids: list[str]) -> None:
    table, vo = _TABLE[field]
    rows = await ctx.db.fetchall(f"SELECT uuid FROM {table} WHERE uuid IN ({_marks(len(uuids))})", tuple(uuids))
    missing = sorted(set(uuids) - {r["uuid"] for r in rows})
    if missing:
        raise NotFound(f"invalid field[{field}], resource[uuids:{missing}, type:{vo}] not found")


async def _scope(ctx: ApiContext, msg: CapacityMsg, *fields: str) -> tuple[str, list[str]] | None:
    picked = msg.pick(*fields)
    if picked is not None:
        await _exist(ctx, *picked)
    return picked


async def _sums(ctx: ApiContext, sql: str, params: tuple[Any, ...]) -> list[int]:
    row = await ctx.db.fetchone(sql, params)
    return [int(v or 0) for v in row]


@api("GetCpuMemoryCapacity", GetCpuMemoryCapacityMsg)
async def get_cpu_memory_capacity(ctx: ApiContext, msg: GetCpuMemoryCapacityMsg) -> dict[str, Any]:
    """Total and available CPU (MHz) and memory (bytes) of the Enabled, Connected hosts of the given hosts,
    clusters or zones (or all)."""
    picked = await _scope(ctx, msg, "hostUuids", "clusterUuids", "zoneUuids")
    where, params = "", ()  # type: tuple[str, tuple[str, ...]]
    if picked is not None:
        col = {"hostUuids": "uuid", "clusterUuids": "clusterUuid", "zoneUuids": "zoneUuid"}[picked[0]]
        where, params = f" AND {col} IN ({_marks(len(picked[1]))})", tuple(picked[1])
    t_cpu, a_cpu, t_mem, a_mem = await _sums(
        ctx, "SELECT SUM(totalCpuCapacity), SUM(availableCpuCapacity), SUM(totalMemoryCapacity), "
             "SUM(availableMemoryCapacity) FROM Host WHERE state='Enabled' AND status='Connected'" + where, params)
    return {"totalCpu": t_cpu, "availableCpu": a_cpu, "totalMemory": t_mem, "availableMemory": a_mem}


@api("GetPrimaryStorageCapacity", GetPrimaryStorageCapacityMsg)
async def get_primary_storage_capacity(ctx: ApiContext, msg: GetPrimaryStorageCapacityMsg) -> dict[str, Any]:
    """Total and available (and physical) capacity of the given primary storages, of those attached to the
    given clusters, or of those in the given zones (or all), each storage counted once."""
    picked = await _scope(ctx, msg, "primaryStorageUuids", "clusterUuids", "zoneUuids")
    where, params = "", ()  # type: tuple[str, tuple[str, ...]]
    if picked is not None:
        field, uuids = picked
        cond = {"primaryStorageUuids": "uuid IN ({})",
                "clusterUuids": "uuid IN (SELECT primaryStorageUuid FROM PrimaryStorageClusterRef "
                                "WHERE clusterUuid IN ({}))",
                "zoneUuids": "zoneUuid IN ({})"}[field]
        where = " WHERE " + cond.format(_marks(len(uuids)))
        params = tuple(uuids)
    total, avail, t_phy, a_phy = await _sums(
        ctx, "SELECT SUM(totalCapacity), SUM(availableCapacity), SUM(totalPhysicalCapacity), "
             "SUM(availablePhysicalCapacity) FROM PrimaryStorage" + where, params)
    return {"totalCapacity": total, "availableCapacity": avail, "totalPhysicalCapacity": t_phy,
            "availablePhysicalCapacity": a_phy}


@api("GetBackupStorageCapacity", GetBackupStorageCapacityMsg)
async def get_backup_storage_capacity(ctx: ApiContext, msg: GetBackupStorageCapacityMsg) -> dict[str, Any]:
    """Total and available capacity of the given backup storages or of those attached to the given zones
    (or all), each storage counted once."""
    picked = await _scope(ctx, msg, "backupStorageUuids", "zoneUuids")
    where, params = "", ()  # type: tuple[str, tuple[str, ...]]
    if picked is not None:
        field, uuids = picked
        if field == "backupStorageUuids":
            where = f" WHERE uuid IN ({_marks(len(uuids))})"
        else:
            where = (" WHERE uuid IN (SELECT backupStorageUuid FROM BackupStorageZoneRef WHERE zoneUuid IN "
                     f"({_marks(len(uuids))}))")
        params = tuple(uuids)
    total, avail = await _sums(ctx, "SELECT SUM(totalCapacity), SUM(availableCapacity) FROM BackupStorage" + where,
                               params)
    return {"totalCapacity": total, "availableCapacity": avail}


@api("GetIpAddressCapacity", GetIpAddressCapacityMsg)
async def get_ip_address_capacity(ctx: ApiContext, msg: GetIpAddressCapacityMsg) -> dict[str, Any]:
    """Total and available IPv4 addresses of the given IP ranges, L3 networks or zones (or all)."""
    picked = await _scope(ctx, msg, "ipRangeUuids", "l3NetworkUuids", "zoneUuids")
    ranges, params = "SELECT uuid, startInt, endInt FROM IpRange", ()  # type: tuple[str, tuple[str, ...]]
    if picked is not None:
        field, uuids = picked
        cond = {"ipRangeUuids": "uuid IN ({})", "l3NetworkUuids": "l3NetworkUuid IN ({})",
                "zoneUuids": "l3NetworkUuid IN (SELECT uuid FROM L3Network WHERE zoneUuid IN ({}))"}[field]
        ranges += " WHERE " + cond.format(_marks(len(uuids)))
        params = tuple(uuids)
    total, used = await _sums(
        ctx, f"WITH r AS ({ranges}) SELECT (SELECT SUM(endInt - startInt + 1) FROM r), "
             "(SELECT COUNT(*) FROM UsedIp u WHERE u.ipRangeUuid IN (SELECT uuid FROM r))", params)
    return {"totalCapacity": total, "availableCapacity": total - used}
