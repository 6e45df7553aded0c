"""Host capacity accounting (DESIGN.md "Allocators").

Invariant: a VM holds ``cpuNum×cpuSpeed`` MHz and ``memorySize`` bytes on host H exactly while its row
has ``hostUuid = H``. Every change of ``VmInstance.hostUuid`` goes through :func:`move_vm`, inside the
caller's transaction, so capacity is taken and returned exactly once; reservations use a conditional
UPDATE so concurrent allocations can never over-commit a host.
"""

from __future__ import annotations

from typing import Any

from controller.db.database import Tx
from controller.errors import OperationError
from controller.util import now_iso


def vm_cpu(vm: dict[str, Any]) -> int:
    return int(vm["cpuNum"]) * int(vm["cpuSpeed"])


async def reserve(tx: Tx, host_uuid: str, cpu: int, memory: int) -> bool:
    """Take ``cpu`` MHz and ``memory`` bytes from the host if it has them; False (nothing changed) if not."""
    cur = await tx.execute(
        "UPDATE Host SET availableCpuCapacity = availableCpuCapacity - ?, "
        "availableMemoryCapacity = availableMemoryCapacity - ? "
        "WHERE uuid = ? AND availableCpuCapacity >= ? AND availableMemoryCapacity >= ?",
        (cpu, memory, host_uuid, cpu, memory))
    return cur.rowcount == 1


async def release(tx: Tx, host_uuid: str, cpu: int, memory: int) -> None:
    await tx.execute("UPDATE Host SET availableCpuCapacity = MIN(totalCpuCapacity, availableCpuCapacity + ?), "
                     "availableMemoryCapacity = availableMemoryCapacity + ? WHERE uuid = ?",
                     (cpu, memory, host_uuid))


async def move_vm(tx: Tx, vm_uuid: str, *, expect_host: str | None, host: str | None, state: str,
                  force: bool = False) -> bool:
    """Set the VM's state and hostUuid, moving its capacity from ``expect_host`` to ``host``.

    The row is changed only if its hostUuid is still ``expect_host`` (False otherwise: someone else moved
    it). ``lastHostUuid`` follows the host being left. ``force`` reserves on ``host`` even when the host
    lacks capacity (the VM runs there already: reality wins over accounting)."""
    vm = await tx.fetchone("SELECT * FROM VmInstance WHERE uuid=?", (vm_uuid,))
    if vm is None or vm["hostUuid"] != expect_host:
        return False
    cpu, mem = vm_cpu(dict(vm)), int(vm["memorySize"])
    values: dict[str, Any] = {"state": state, "hostUuid": host, "lastOpDate": now_iso()}
    if host != expect_host:
        if expect_host is not None:
            await release(tx, expect_host, cpu, mem)
            values["lastHostUuid"] = expect_host
        if host is not None and not await reserve(tx, host, cpu, mem):
            if not force:
                raise OperationError(f"host[uuid:{host}] has not enough capacity for vm[uuid:{vm_uuid}] "
                                     f"(needs {cpu} MHz CPU and {mem} bytes of memory)")
            await tx.execute("UPDATE Host SET availableCpuCapacity = availableCpuCapacity - ?, "
                             "availableMemoryCapacity = availableMemoryCapacity - ? WHERE uuid = ?",
                             (cpu, mem, host))
    await tx.update("VmInstance", {"uuid": vm_uuid}, values)
    return True


async def recompute(tx: Tx, host_uuid: str, total_cpu: int, total_memory: int, reserved_memory: int) -> None:
    """Set a host's totals and derive availability from the VMs that hold capacity on it."""
    row = await tx.fetchone("SELECT COALESCE(SUM(cpuNum * cpuSpeed), 0), COALESCE(SUM(memorySize), 0) "
                            "FROM VmInstance WHERE hostUuid = ?", (host_uuid,))
    used_cpu, used_mem = (int(row[0]), int(row[1])) if row else (0, 0)
    await tx.update("Host", {"uuid": host_uuid}, {
        "totalCpuCapacity": total_cpu, "availableCpuCapacity": total_cpu - used_cpu,
        "totalMemoryCapacity": total_memory,
        "availableMemoryCapacity": max(0, total_memory - reserved_memory) - used_mem})
