"""Tag service: validation against registered patterns, writes inside callers' transactions, listeners."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from controller.core import Controller
from controller.db.database import Tx
from controller.errors import InvalidArgument, NotFound, OperationError
from controller.tags.patterns import PATTERNS, TagPattern, find_pattern
from controller.util import new_uuid, now_iso

#: 1.0 resource type names (JPA entity simple names) → table
RESOURCE_TYPES: dict[str, str] = {
    "ZoneVO": "Zone", "ClusterVO": "Cluster", "HostVO": "Host", "KVMHostVO": "Host",
    "PrimaryStorageVO": "PrimaryStorage", "LocalStorageVO": "PrimaryStorage",
    "BackupStorageVO": "BackupStorage", "SftpBackupStorageVO": "BackupStorage",
    "ImageVO": "Image", "InstanceOfferingVO": "InstanceOffering", "DiskOfferingVO": "DiskOffering",
    "L2NetworkVO": "L2Network", "L2VlanNetworkVO": "L2Network", "L3NetworkVO": "L3Network",
    "IpRangeVO": "IpRange", "VmInstanceVO": "VmInstance", "VolumeVO": "Volume",
    "VolumeSnapshotVO": "VolumeSnapshot", "NetworkServiceProviderVO": "NetworkServiceProvider",
    "SecurityGroupVO": "SecurityGroup", "VipVO": "Vip", "EipVO": "Eip",
    "PortForwardingRuleVO": "PortForwardingRule",
}

_DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]"
                     r"{0,61}[a-zA-Z0-9])?)*")
_BOOT_DEVICES = ("HardDisk", "CdRom")

#: fn(event, resource_type, resource_uuid, tag) with event in created/updated/deleted
Listener = Callable[[str, str, str, str], Awaitable[None]]


def is_domain(name: str) -> bool:
    return bool(_DOMAIN.fullmatch(name))


class Tags:
    def __init__(self, core: Controller) -> None:
        self.core = core
        self.listeners: list[tuple[str, Listener]] = []

    def listen(self, key: str, fn: Listener) -> None:
        """Call ``fn`` after a system tag whose pattern key is ``key`` (e.g. ``userdata``) changes."""
        self.listeners.append((key, fn))

    async def notify(self, event: str, resource_type: str, resource_uuid: str, tag: str) -> None:
        found = find_pattern(resource_type, tag)
        if found is None:
            return
        for key, fn in self.listeners:
            if found[0].key() == key:
                await fn(event, resource_type, resource_uuid, tag)

    async def check_resource(self, resource_type: str, resource_uuid: str) -> str:
        table = RESOURCE_TYPES.get(resource_type)
        if table is None:
            raise InvalidArgument(f"no resource type[{resource_type}] found in tag system; valid types are "
                                  f"{sorted(RESOURCE_TYPES)}")
        if await self.core.db.fetchone(f"SELECT 1 FROM {table} WHERE uuid=?", (resource_uuid,)) is None:
            raise NotFound(f"invalid field[resourceUuid], resource[uuid:{resource_uuid}, type:{resource_type}] "
                           "not found")
        return table

    async def validate_system_tag(self, resource_type: str, resource_uuid: str | None, tag: str) -> TagPattern:
        """The matching pattern after its validator accepted ``tag``, or InvalidArgument."""
        found = find_pattern(resource_type, tag)
        if found is None:
            raise InvalidArgument(f"no system tag matches {tag[:200]!r} for resource type {resource_type}; "
                                  "system tags have the form key::value and a value cannot contain '::'")
        pattern, values = found
        check = _VALIDATORS.get(pattern.key())
        if check is not None:
            await check(self, resource_uuid, values)
        return pattern

    async def validate_create_tags(self, resource_type: str, system_tags: Sequence[str] | None) -> None:
        """Validate the systemTags of a create message before anything is written."""
        for t in system_tags or ():
            await self.validate_system_tag(resource_type, None, t)

    async def write(self, tx: Tx, resource_type: str, resource_uuid: str, tag: str, *, system: bool,
                    inherent: bool = False) -> dict[str, Any] | None:
        """Insert a tag inside ``tx``; a duplicate inserts nothing and returns None (1.0 behaviour)."""
        table = "SystemTag" if system else "UserTag"
        dup = await tx.fetchone(f"SELECT 1 FROM {table} WHERE resourceUuid=? AND resourceType=? AND tag=?",
                                (resource_uuid, resource_type, tag))
        if dup is not None:
            return None
        now = now_iso()
        row: dict[str, Any] = {"uuid": new_uuid(), "resourceUuid": resource_uuid, "resourceType": resource_type,
                               "tag": tag, "type": "System" if system else "User",
                               "createDate": now, "lastOpDate": now}
        if system:
            row["inherent"] = 1 if inherent else 0
        await tx.insert(table, row)
        return row

    async def write_create_tags(self, tx: Tx, resource_type: str, resource_uuid: str,
                                system_tags: Sequence[str] | None, user_tags: Sequence[str] | None) -> None:
        for t in system_tags or ():
            await self.write(tx, resource_type, resource_uuid, t, system=True)
        for t in user_tags or ():
            await self.write(tx, resource_type, resource_uuid, t, system=False)

    async def values(self, resource_uuid: str, key: str) -> list[tuple[str, dict[str, str]]]:
        """(tag uuid, captured values) of the system tags of a resource whose pattern key is ``key``."""
        rows = await self.core.db.fetchall(
            "SELECT uuid, tag, resourceType FROM SystemTag WHERE resourceUuid=? AND tag LIKE ? ORDER BY createDate",
            (resource_uuid, key.replace("%", r"\%") + "::%"))
        out = []
        for r in rows:
            found = find_pattern(r["resourceType"], r["tag"])
            if found and found[0].key() == key:
                out.append((r["uuid"], found[1]))
        return out

    async def remove(self, tx: Tx, resource_uuid: str, key: str) -> None:
        await tx.execute("DELETE FROM SystemTag WHERE resourceUuid=? AND (tag = ? OR tag LIKE ?)",
                         (resource_uuid, key, key + "::%"))


async def _check_hostname(tags: Tags, vm_uuid: str | None, v: dict[str, str]) -> None:
    name = v["hostname"]
    if not is_domain(name):
        raise InvalidArgument(f"hostname[{name}] is not a valid domain name (letters, digits, '-' and '.')")
    rows = await tags.core.db.fetchall("SELECT resourceUuid FROM SystemTag WHERE tag=? AND resourceUuid!=?",
                                       (f"hostname::{name}", vm_uuid or ""))
    if rows and vm_uuid is not None:
        mine = await tags.core.db.fetchone("SELECT defaultL3NetworkUuid FROM VmInstance WHERE uuid=?", (vm_uuid,))
        for r in rows:
            other = await tags.core.db.fetchone("SELECT defaultL3NetworkUuid FROM VmInstance WHERE uuid=?",
                                                (r["resourceUuid"],))
            if mine and other and other["defaultL3NetworkUuid"] == mine["defaultL3NetworkUuid"]:
                raise OperationError(f"hostname[{name}] is already used by VM[uuid:{r['resourceUuid']}] on the "
                                     "same default L3 network")


async def _check_static_ip(tags: Tags, vm_uuid: str | None, v: dict[str, str]) -> None:
    l3, ip = v["l3NetworkUuid"], v["staticIp"]
    if await tags.core.db.fetchone("SELECT 1 FROM L3Network WHERE uuid=?", (l3,)) is None:
        raise NotFound(f"staticIp tag: L3 network[uuid:{l3}] not found")
    try:
        n = int(ipaddress.IPv4Address(ip))
    except ValueError:
        raise InvalidArgument(f"staticIp tag: {ip!r} is not an IPv4 address") from None
    if await tags.core.db.fetchone("SELECT 1 FROM IpRange WHERE l3NetworkUuid=? AND startInt<=? AND endInt>=?",
                                   (l3, n, n)) is None:
        raise InvalidArgument(f"staticIp tag: {ip} is not inside any IP range of L3 network[uuid:{l3}]")
    used = await tags.core.db.fetchone("SELECT uuid FROM UsedIp WHERE l3NetworkUuid=? AND ipInLong=?", (l3, n))
    if used is not None:
        nic = await tags.core.db.fetchone("SELECT vmInstanceUuid FROM VmNic WHERE usedIpUuid=?", (used["uuid"],))
        if nic is None or nic["vmInstanceUuid"] != vm_uuid:
            raise OperationError(f"staticIp tag: {ip} of L3 network[uuid:{l3}] is already used")


async def _check_boot_order(tags: Tags, vm_uuid: str | None, v: dict[str, str]) -> None:
    items = v["bootOrder"].split(",")
    for d in items:
        if d not in _BOOT_DEVICES:
            raise InvalidArgument(f"invalid boot device[{d}] in boot order{items}; valid devices are "
                                  f"{list(_BOOT_DEVICES)}")


#: fn(tags, resource_uuid or None at create, the pattern's captured values); raises to refuse the tag
Validator = Callable[[Tags, str | None, dict[str, str]], Awaitable[None]]

_VALIDATORS: dict[str, Validator] = {
    "hostname": _check_hostname,
    "staticIp": _check_static_ip,
    "bootOrder": _check_boot_order,
}


def register_pattern(pattern: TagPattern, validator: Validator | None = None) -> None:
    """Declare a system-tag pattern another package adds, with the validator of its values (called for
    every tag matching it, keyed by ``pattern.key()``). Call at import time.

    Idempotent: the same pattern and validator again change nothing. A different definition of the same
    pattern string, or another validator for the same key, is a programming error (ValueError)."""
    for p in PATTERNS:
        if p.pattern == pattern.pattern and p != pattern:
            raise ValueError(f"system tag pattern {pattern.pattern!r} is already registered as {p}")
    known = _VALIDATORS.get(pattern.key())
    if validator is not None and known is not None and known is not validator:
        raise ValueError(f"system tag key {pattern.key()!r} already has the validator {known.__qualname__}")
    if pattern not in PATTERNS:
        PATTERNS.append(pattern)
    if validator is not None:
        _VALIDATORS[pattern.key()] = validator
