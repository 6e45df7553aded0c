"""GetCpuMemoryCapacity over a cloud of simulated hosts (real in-process agents over the libvirt test driver,
each with its own CPU count and memory), against figures computed by hand from those sizes and the VMs
started on them: total CPU = cores x 2000 MHz, available = total - the VMs' cpuNum x cpuSpeed; available
memory = total - the 512 MiB the host reserves - the VMs' memory."""

from __future__ import annotations

from typing import Any

from test_controller_compute import Env, start_agent

from controller.compute.hosts import add_connected_host

GiB = 1 << 30
RESERVED = 512 << 20


async def test_cpu_memory_capacity_over_simulated_hosts(env: Env, tmp_path: Any) -> None:
    z2 = await env.inv("CreateZone", name="z2")
    c2 = await env.inv("CreateCluster", name="c2", zoneUuid=z2["uuid"], hypervisorType="KVM")
    sizes = [(2, 4 * GiB), (8, 16 * GiB), (1, 2 * GiB)]
    for i, (cpus, mem) in enumerate(sizes):
        a = await start_agent(tmp_path / "more", f"127.0.9.{21 + i}", env.url, cpus=cpus, memory=mem)
        env.agents.append(a)
        await add_connected_host(env.core, name=f"x{i}", cluster_uuid=c2["uuid"], ip=a.ip, port=7070,
                                 token=a.config.token, controller_url=env.url, uuid=a.config.host_uuid)
    by_ip = {h["managementIp"]: h for h in await env.hosts()}
    assert len(by_ip) == 5 and {h["status"] for h in by_ip.values()} == {"Connected"}

    # two VMs of the 1-core/1000 MHz/1 GiB offering on the first cluster (fixture hosts: 4 cores, 8 GiB each)
    for n in ("a", "b"):
        status, body = await env.create_vm(n)
        assert status == 200, body
    c1_total_cpu, c1_total_mem = 2 * 4 * 2000, 2 * 8 * GiB
    c1 = (c1_total_cpu, c1_total_cpu - 2 * 1000, c1_total_mem, c1_total_mem - 2 * RESERVED - 2 * GiB)
    c2_total_cpu, c2_total_mem = (2 + 8 + 1) * 2000, (4 + 16 + 2) * GiB
    c2_fig = (c2_total_cpu, c2_total_cpu, c2_total_mem, c2_total_mem - 3 * RESERVED)

    async def cap(**kw: Any) -> tuple[int, int, int, int]:
        r = await env.call("GetCpuMemoryCapacity", **kw)
        return r["totalCpu"], r["availableCpu"], r["totalMemory"], r["availableMemory"]

    assert await cap(clusterUuids=[env.ids["cluster"]]) == c1
    assert await cap(zoneUuids=[z2["uuid"]]) == c2_fig
    assert await cap(all=True) == tuple(a + b for a, b in zip(c1, c2_fig, strict=True))
    big = by_ip["127.0.9.22"]["uuid"]
    assert await cap(hostUuids=[big]) == (16000, 16000, 16 * GiB, 16 * GiB - RESERVED)
    # a disabled host leaves the figures (1.0 counts Enabled + Connected hosts only)
    await env.call("ChangeHostState", uuid=big, stateEvent="disable")
    assert await cap(zoneUuids=[z2["uuid"]]) == (c2_fig[0] - 16000, c2_fig[1] - 16000,
                                                  c2_fig[2] - 16 * GiB, c2_fig[3] - (16 * GiB - RESERVED))
    assert await cap(hostUuids=[big]) == (0, 0, 0, 0)
