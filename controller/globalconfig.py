"""Global configurations: typed, validated settings stored in ``GlobalConfig``, with 1.0's defaults.

Every config is declared here with its category, name, default, type and rule; other packages add theirs
with :func:`register_config`. ``UpdateGlobalConfig`` validates against them (an unknown category/name is a
400) and notifies listeners (e.g. the expunge task restarts when ``vm/expungeInterval`` changes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage
from controller.api.registry import api
from controller.core import Controller, on_start
from controller.errors import InvalidArgument

log = logging.getLogger(__name__)

Listener = Callable[[str, str, str], Awaitable[None]]


@dataclass(frozen=True)
class ConfigDef:
    category: str
    name: str
    default: str
    type: type = str
    valid: tuple[str, ...] = ()
    min: int | None = None
    description: str = ""

    def check(self, value: str) -> str:
        """The normalised value, or InvalidArgument naming the config, the value and the rule."""
        where = f"global config[category:{self.category}, name:{self.name}]"
        if self.valid and value not in self.valid:
            raise InvalidArgument(f"valid values of {where} are {list(self.valid)}, but actual is {value!r}")
        if self.type is int:
            try:
                n = int(value)
            except ValueError:
                raise InvalidArgument(f"{where} takes an integer, but actual is {value!r}") from None
            if self.min is not None and n < self.min:
                raise InvalidArgument(f"{where} must be >= {self.min}, but actual is {n}")
            return str(n)
        if self.type is bool:
            if value.lower() not in ("true", "false"):
                raise InvalidArgument(f"{where} takes true or false, but actual is {value!r}")
            return value.lower()
        return value


_POLICY = ("Direct", "Delay", "Never")
_CACHE_MODES = ("none", "writethrough", "writeback")


def _deletion(cat: str, what: str) -> list[ConfigDef]:
    return [
        ConfigDef(cat, "deletionPolicy", "Delay", valid=_POLICY, description=(
            f"How {what} are deleted. Direct: deleted at once, no way to recover. Delay: marked Deleted "
            "and expunged after expungePeriod; recoverable until then. Never: marked Deleted and never "
            "expunged automatically; recoverable.")),
        ConfigDef(cat, "expungePeriod", "86400", int, min=1,
                  description=f"Seconds a deleted {what[:-1]} is kept before the expunge task removes it."),
        ConfigDef(cat, "expungeInterval", "3600", int, min=1,
                  description=f"Seconds between two runs of the {what} expunge task."),
    ]


CONFIGS: list[ConfigDef] = [
    *_deletion("vm", "VMs"), *_deletion("image", "images"), *_deletion("volume", "volumes"),
    ConfigDef("vm", "dataVolume.deleteOnVmDestroy", "false", bool,
              description="Delete attached data volumes when their VM is destroyed."),
    ConfigDef("vm", "instanceOffering.setNullWhenDeleting", "true", bool,
              description="Clear VMs' instanceOfferingUuid when the offering is deleted."),
    ConfigDef("volume", "diskOffering.setNullWhenDeleting", "true", bool,
              description="Clear volumes' diskOfferingUuid when the disk offering is deleted."),
    ConfigDef("kvm", "vm.consoleMode", "vnc", valid=("vnc", "spice"),
              description="Console protocol of VMs (vnc or spice); applied at the VM's next start."),
    ConfigDef("kvm", "vm.cpuMode", "none", valid=("none", "host-model", "host-passthrough"), description=(
        "CPU model exposed to VMs at their next start. host-model or host-passthrough enable nested "
        "virtualization; they may break live migration between hosts with different CPU models. "
        "host-passthrough needs KVM (a TCG host refuses it); nested virtualization also needs "
        "/sys/module/kvm_intel/parameters/nested = Y on the host.")),
    ConfigDef("kvm", "vm.cacheMode", "none", valid=_CACHE_MODES, description="Disk cache mode of VM volumes."),
    ConfigDef("kvm", "vmSyncOnHostPing", "true", bool,
              description="Run a full VM state sync with each host ping."),
    ConfigDef("kvm", "reservedMemory", "512M", description="Host memory kept for the host itself."),
    ConfigDef("host", "ping.interval", "60", int, min=1, description="Seconds between two host pings."),
    ConfigDef("host", "ping.maxFailure", "3", int, min=1,
              description="Failed pings in a row before a host is marked Disconnected."),
    ConfigDef("host", "ping.timeout", "5", int, min=1, description="Seconds to wait for a ping reply."),
    ConfigDef("host", "connection.autoReconnectOnError", "true", bool,
              description="Reconnect a host automatically when its agent answers again."),
    ConfigDef("identity", "session.timeout", "7200", int, min=1,
              description="Seconds a session lives after login (not sliding)."),
    ConfigDef("identity", "session.maxConcurrent", "500", int, min=1,
              description="Most sessions one account may hold at once; further logins are refused."),
    ConfigDef("identity", "session.cleanup.interval", "3600", int, min=1,
              description="Seconds between two removals of expired sessions."),
    ConfigDef("identity", "admin.showAllResource", "true", bool,
              description="The admin account sees every account's resources."),
]


def register_config(config: ConfigDef) -> ConfigDef:
    """Declare a config another package adds (call at import time, before the controller starts).

    Idempotent: registering the same definition again changes nothing. A different definition under a
    (category, name) already registered is a programming error (ValueError naming both)."""
    for d in CONFIGS:
        if (d.category, d.name) == (config.category, config.name):
            if d != config:
                raise ValueError(f"global config[category:{config.category}, name:{config.name}] is already "
                                 f"registered as {d}; cannot register {config}")
            return d
    CONFIGS.append(config)
    return config


@dataclass
class GlobalConfigs:
    """In-memory view of the GlobalConfig table (the table is the truth; this is its cache)."""

    core: Controller
    defs: dict[tuple[str, str], ConfigDef] = field(default_factory=dict)
    values: dict[tuple[str, str], str] = field(default_factory=dict)
    listeners: dict[tuple[str, str] | str, list[Listener]] = field(default_factory=dict)

    def get(self, category: str, name: str) -> str:
        return self.values[(category, name)]

    def get_int(self, category: str, name: str) -> int:
        return int(self.get(category, name))

    def get_bool(self, category: str, name: str) -> bool:
        return self.get(category, name) == "true"

    def listen(self, key: tuple[str, str] | str, fn: Listener) -> None:
        """Call ``fn(category, name, value)`` after a config (or any config of a category) changes."""
        self.listeners.setdefault(key, []).append(fn)

    async def update(self, category: str, name: str, value: str) -> None:
        d = self.defs.get((category, name))
        if d is None:
            raise InvalidArgument(f"no global config[category:{category}, name:{name}]; known names in "
                                  f"category {category!r}: {sorted(n for c, n in self.defs if c == category)}")
        value = d.check(value)
        async with self.core.db.write() as tx:
            await tx.execute("UPDATE GlobalConfig SET value=? WHERE category=? AND name=?",
                             (value, category, name))
        self.values[(category, name)] = value
        for fn in self.listeners.get((category, name), []) + self.listeners.get(category, []):
            await fn(category, name, value)


@on_start(10, "globalconfig")
async def _bootstrap(core: Controller) -> None:
    gc = GlobalConfigs(core)
    async with core.db.write() as tx:
        for d in CONFIGS:
            gc.defs[(d.category, d.name)] = d
            await tx.execute("INSERT INTO GlobalConfig (category, name, value, defaultValue, description) "
                             "VALUES (?, ?, ?, ?, ?) ON CONFLICT(category, name) DO UPDATE SET "
                             "defaultValue=excluded.defaultValue, description=excluded.description",
                             (d.category, d.name, d.default, d.default, d.description))
        for row in await tx.fetchall("SELECT category, name, value FROM GlobalConfig"):
            gc.values[(row["category"], row["name"])] = row["value"]
    core.services["configs"] = gc


class UpdateGlobalConfigMsg(ApiMessage):
    category: str = Field(min_length=1)
    name: str = Field(min_length=1)
    value: str | int | bool

    def text(self) -> str:
        return str(self.value).lower() if isinstance(self.value, bool) else str(self.value)


@api("UpdateGlobalConfig", UpdateGlobalConfigMsg, queue=lambda m: f"config:{m.category}:{m.name}")
async def update_global_config(ctx: ApiContext, msg: UpdateGlobalConfigMsg) -> dict[str, Any]:
    """Change a global configuration after validating the value against its type and valid values."""
    gc: GlobalConfigs = ctx.core.services["configs"]
    await gc.update(msg.category, msg.name, msg.text())
    return {"inventory": await ctx.inventory("GlobalConfig", (msg.category, msg.name))}
