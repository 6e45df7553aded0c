"""1.0's type lists for the create dialogs, and ``GetGlobalConfig``.

Each list is read from the message model that accepts the value (the ``Literal`` of its field), so a list
always says exactly what the create API takes: adding a type to the model adds it here.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage
from controller.api.registry import api
from controller.errors import NotFound
from controller.resources.backup_storage import AddSftpBackupStorageMsg
from controller.resources.cluster import CreateClusterMsg
from controller.resources.l2 import NOVLAN, VLAN
from controller.resources.l3 import CreateL3NetworkMsg
from controller.resources.offering import CreateDiskOfferingMsg, CreateInstanceOfferingMsg
from controller.resources.primary_storage import AddLocalPrimaryStorageMsg
from controller.resources.shared_storage import AddNfsPrimaryStorageMsg, AddSharedMountPointPrimaryStorageMsg


def accepted(model: type[ApiMessage], field: str) -> list[str]:
    """The values a ``Literal`` field of ``model`` accepts (``X | None`` unwrapped), in declaration order."""
    ann = model.model_fields[field].annotation
    out: list[str] = []
    for arg in (typing.get_args(ann) if typing.get_origin(ann) is not typing.Literal else (ann,)):
        if typing.get_origin(arg) is typing.Literal:
            out += list(typing.get_args(arg))
    return out


#: volume formats with the hypervisor that creates them and those that can use them (1.0's VolumeFormat)
VOLUME_FORMATS = (("qcow2", "KVM", ["KVM"]), ("raw", "KVM", ["KVM"]))


class EmptyMsg(ApiMessage):
    pass


class GetGlobalConfigMsg(ApiMessage):
    category: str = Field(min_length=1)
    name: str = Field(min_length=1)


def _types_api(name: str, key: str, values: Any, doc: str) -> None:
    async def handler(ctx: ApiContext, msg: EmptyMsg) -> dict[str, Any]:
        return {key: list(values() if callable(values) else values)}

    handler.__doc__ = doc
    api(name, EmptyMsg)(handler)


_types_api("GetHypervisorTypes", "hypervisorTypes", lambda: accepted(CreateClusterMsg, "hypervisorType"),
           "The hypervisor types a cluster can have.")
_types_api("GetL2NetworkTypes", "l2NetworkTypes", (NOVLAN, VLAN), "The L2 network types.")
_types_api("GetL3NetworkTypes", "l3NetworkTypes", lambda: accepted(CreateL3NetworkMsg, "type"),
           "The L3 network types.")
_types_api("GetPrimaryStorageTypes", "primaryStorageTypes",
           lambda: [t for m in (AddLocalPrimaryStorageMsg, AddNfsPrimaryStorageMsg,
                                AddSharedMountPointPrimaryStorageMsg)
                    for t in accepted(m, "type")], "The primary storage types.")
_types_api("GetBackupStorageTypes", "backupStorageTypes", lambda: accepted(AddSftpBackupStorageMsg, "type"),
           "The backup storage types.")
_types_api("GetHostAllocatorStrategies", "hostAllocatorStrategies",
           lambda: accepted(CreateInstanceOfferingMsg, "allocatorStrategy"),
           "The host allocator strategies an instance offering can name.")
_types_api("GetPrimaryStorageAllocatorStrategies", "primaryStorageAllocatorStrategies",
           lambda: accepted(CreateDiskOfferingMsg, "allocationStrategy"),
           "The primary storage allocator strategies a disk offering can name.")


@api("GetVolumeFormat", EmptyMsg)
async def get_volume_format(ctx: ApiContext, msg: EmptyMsg) -> dict[str, Any]:
    """The volume formats with their master hypervisor type and the hypervisor types that support them."""
    return {"formats": [{"format": f, "masterHypervisorType": m, "supportingHypervisorTypes": list(s)}
                        for f, m, s in VOLUME_FORMATS]}


@api("GetGlobalConfig", GetGlobalConfigMsg)
async def get_global_config(ctx: ApiContext, msg: GetGlobalConfigMsg) -> dict[str, Any]:
    """One global config by category and name."""
    row = await ctx.db.fetchone("SELECT 1 FROM GlobalConfig WHERE category=? AND name=?", (msg.category, msg.name))
    if row is None:
        raise NotFound(f"unable to find GlobalConfig[category:{msg.category}, name:{msg.name}]; QueryGlobalConfig "
                       "lists the configs")
    return {"inventory": await ctx.inventory("GlobalConfig", (msg.category, msg.name))}
