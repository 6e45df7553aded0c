"""Instance and disk offerings: Create*, Update*, Change*State, Delete* (queries are generic).

Sizes are bytes (1.0). Every number must be positive; a bad value is 400 SYS.1007 naming the field.
Deleting an offering clears ``VmInstance.instanceOfferingUuid`` / ``Volume.diskOfferingUuid`` when the
global configs ``vm/instanceOffering.setNullWhenDeleting`` / ``volume/diskOffering.setNullWhenDeleting``
are true (the default), in the same transaction as the delete.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from controller.api.context import ApiContext
from controller.api.messages import CreateMessage, Description, Name, UuidDeleteMessage
from controller.api.registry import api, by_uuid
from controller.resources.common import change_state_api, create_row, update_api

HostAllocator = Literal["DefaultHostAllocatorStrategy", "LeastVmPreferredHostAllocatorStrategy",
                        "DesignatedHostAllocatorStrategy"]


class InstanceOfferingFields(CreateMessage):
    """What every instance offering has (user VMs' here, virtual routers' in ``controller.vrouter_provider``)."""

    name: Name
    description: Description | None = None
    cpuNum: int = Field(gt=0, le=1024)
    cpuSpeed: int = Field(gt=0)
    memorySize: int = Field(gt=0, description="bytes")
    allocatorStrategy: HostAllocator = "DefaultHostAllocatorStrategy"
    sortKey: int = 0


class CreateInstanceOfferingMsg(InstanceOfferingFields):
    type: Literal["UserVm"] = "UserVm"


class CreateDiskOfferingMsg(CreateMessage):
    name: Name
    description: Description | None = None
    diskSize: int = Field(gt=0, description="bytes")
    sortKey: int = 0
    allocationStrategy: Literal["DefaultPrimaryStorageAllocationStrategy"] = \
        "DefaultPrimaryStorageAllocationStrategy"
    type: Literal["zstack"] = "zstack"


@api("CreateInstanceOffering", CreateInstanceOfferingMsg)
async def create_instance_offering(ctx: ApiContext, msg: CreateInstanceOfferingMsg) -> dict[str, Any]:
    """Create an instance offering (CPU count, CPU speed in MHz, memory in bytes)."""
    row = await create_row(ctx, "InstanceOffering", "InstanceOfferingVO", msg, {
        "name": msg.name, "description": msg.description, "cpuNum": msg.cpuNum, "cpuSpeed": msg.cpuSpeed,
        "memorySize": msg.memorySize, "type": msg.type, "allocatorStrategy": msg.allocatorStrategy,
        "sortKey": msg.sortKey, "state": "Enabled"})
    return {"inventory": await ctx.inventory("InstanceOffering", row["uuid"])}


@api("CreateDiskOffering", CreateDiskOfferingMsg)
async def create_disk_offering(ctx: ApiContext, msg: CreateDiskOfferingMsg) -> dict[str, Any]:
    """Create a disk offering (size in bytes)."""
    row = await create_row(ctx, "DiskOffering", "DiskOfferingVO", msg, {
        "name": msg.name, "description": msg.description, "diskSize": msg.diskSize, "sortKey": msg.sortKey,
        "state": "Enabled", "type": msg.type, "allocatorStrategy": msg.allocationStrategy})
    return {"inventory": await ctx.inventory("DiskOffering", row["uuid"])}


def _register_common(kind: str, table: str, ref_table: str, ref_column: str, config: tuple[str, str]) -> None:
    """Update/Change*State/Delete APIs of one offering kind (they differ only in names); Delete clears the
    references in the same transaction when the kind's setNullWhenDeleting config is true."""
    update_api(table, f"Change an {kind}'s name or description.")
    change_state_api(table, f"Enable or disable an {kind} (a Disabled one cannot be used for new resources).")

    async def delete(ctx: ApiContext, msg: UuidDeleteMessage) -> dict[str, Any]:
        set_null = ctx.core.services["configs"].get_bool(*config)
        async with ctx.db.write() as tx:
            cur = await tx.execute(f"DELETE FROM {table} WHERE uuid=?", (msg.uuid,))
            if cur.rowcount and set_null:
                await tx.execute(f"UPDATE {ref_table} SET {ref_column}=NULL WHERE {ref_column}=?", (msg.uuid,))
        return {}

    delete.__doc__ = f"Delete an {kind}; an unknown uuid succeeds (1.0)."
    api(f"Delete{table}", UuidDeleteMessage, queue=by_uuid)(delete)


_register_common("instance offering", "InstanceOffering", "VmInstance", "instanceOfferingUuid",
                 ("vm", "instanceOffering.setNullWhenDeleting"))
_register_common("disk offering", "DiskOffering", "Volume", "diskOfferingUuid",
                 ("volume", "diskOffering.setNullWhenDeleting"))
