"""ChangeInstanceOffering against real in-process agents (libvirt test driver): immediate when Stopped (the
next domain has the new vCPUs and memory), pending until the next start when Running (capacity reserved for
the new size only then), and its refusals."""

from __future__ import annotations

from typing import Any

from test_controller_compute import CTX, Env, _agent, _capacity_exact

GiB = 1 << 30


async def _domain(e: Env, vm: dict[str, Any]) -> tuple[int, int]:
    """(memory bytes, vCPUs) of the VM's libvirt domain on its host."""
    guest = await _agent(e, vm["hostUuid"]).app[CTX].driver.host.lookup(vm["uuid"])
    assert guest is not None
    mem_kib, vcpus = await guest.memory_and_vcpus()
    return mem_kib, vcpus


async def _refused(e: Env, status: int, code: str, /, *needles: str, **kw: Any) -> None:
    got, body = await e.raw("ChangeInstanceOffering", **kw)
    assert got == status and body["error"]["code"] == code, body
    for n in needles:
        assert n in body["error"]["details"], (n, body)


async def test_change_offering_stopped_and_running(env: Env) -> None:
    e = env
    big = await e.inv("CreateInstanceOffering", name="big", cpuNum=2, cpuSpeed=1500, memorySize=2 * GiB)
    small_uuid = e.ids["offering"]
    vm = (await e.create_vm("vm1"))[1]["inventory"]
    assert await _domain(e, vm) == (GiB >> 10, 1)
    # Running: offering recorded, size pending until the next start
    inv = await e.inv("ChangeInstanceOffering", vmInstanceUuid=vm["uuid"], instanceOfferingUuid=big["uuid"])
    assert inv["instanceOfferingUuid"] == big["uuid"] and (inv["cpuNum"], inv["memorySize"]) == (1, GiB)
    tags = await e.core.db.fetchall("SELECT tag FROM SystemTag WHERE resourceUuid=?", (vm["uuid"],))
    assert f"pendingCapacityChange::cpuNum::2::cpuSpeed::1500::memory::{2 * GiB}" in [t["tag"] for t in tags]
    await _capacity_exact(e)
    await e.call("RebootVmInstance", uuid=vm["uuid"])           # a reboot keeps the running size
    assert (await e.vm(vm["uuid"]))["cpuNum"] == 1
    await e.call("StopVmInstance", uuid=vm["uuid"])
    started = await e.inv("StartVmInstance", uuid=vm["uuid"])
    assert (started["cpuNum"], started["cpuSpeed"], started["memorySize"]) == (2, 1500, 2 * GiB)
    mem_kib, vcpus = await _domain(e, started)
    assert (mem_kib, vcpus) == (2 * GiB >> 10, 2)
    assert not await e.core.db.fetchall("SELECT 1 FROM SystemTag WHERE resourceUuid=? AND tag LIKE 'pending%'",
                                        (vm["uuid"],))
    await _capacity_exact(e)
    # Stopped: immediate, and the next start uses it
    await e.call("StopVmInstance", uuid=vm["uuid"])
    inv = await e.inv("ChangeInstanceOffering", vmInstanceUuid=vm["uuid"], instanceOfferingUuid=small_uuid)
    assert (inv["cpuNum"], inv["cpuSpeed"], inv["memorySize"], inv["instanceOfferingUuid"]) == (
        1, 1000, GiB, small_uuid)
    started = await e.inv("StartVmInstance", uuid=vm["uuid"])
    assert await _domain(e, started) == (GiB >> 10, 1)
    await _capacity_exact(e)


async def test_change_offering_refusals_change_nothing(env: Env) -> None:
    e = env
    vm = (await e.create_vm("vm1"))[1]["inventory"]
    off = await e.inv("CreateInstanceOffering", name="off", cpuNum=4, cpuSpeed=1000, memorySize=GiB)
    await e.call("ChangeInstanceOfferingState", uuid=off["uuid"], stateEvent="disable")
    before = await e.vm(vm["uuid"])
    await _refused(e, 409, "SYS.1006", "Disabled", vmInstanceUuid=vm["uuid"], instanceOfferingUuid=off["uuid"])
    await _refused(e, 404, "SYS.1003", "instanceOfferingUuid", vmInstanceUuid=vm["uuid"],
                   instanceOfferingUuid="a" * 32)
    await _refused(e, 404, "SYS.1003", "vmInstanceUuid", vmInstanceUuid="a" * 32, instanceOfferingUuid=off["uuid"])
    await _refused(e, 400, "SYS.1007", "instanceOfferingUuid", vmInstanceUuid=vm["uuid"])
    await e.call("DestroyVmInstance", uuid=vm["uuid"])
    await e.call("ChangeInstanceOfferingState", uuid=off["uuid"], stateEvent="enable")
    await _refused(e, 409, "VM.1010", "Destroyed", vmInstanceUuid=vm["uuid"], instanceOfferingUuid=off["uuid"])
    after = await e.vm(vm["uuid"])
    assert (after["instanceOfferingUuid"], after["cpuNum"]) == (before["instanceOfferingUuid"], before["cpuNum"])
