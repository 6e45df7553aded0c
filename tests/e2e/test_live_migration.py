"""Issue 15 end to end on the 2-host testbed: live migration of a running tiny TCG guest whose root and data
volumes are on local primary storage, with the flat network (DHCP, user data, anti-spoofing).

MigrateVm to the other host: the guest keeps running (same boot id, uptime keeps growing, a background counter
started before the migration still counts, read over SSH from the new host's flat namespace), the data volume's
content is intact, its IP answers, its lease is renewed by the NEW host's dnsmasq and its user data served
there, the source has no domain, no volume file and no flat entry left; the DB shows the new host, the
lastHost, the local-storage refs on the new host, and the CPU/memory and local-storage capacity moved; polled
while it moves, the VM is only ever Running or Migrating. Then
MigrateVm without a host through zstack-cli (the only candidate: back to the first host), same checks. Then
ChangeHostState maintain on that host: the guest moves to the other host (same boot id, the counter still counts)
and the host is in Maintenance; enable leaves it.

First, a migration that fails half-way: the destination's libvirtd refuses the source's connection (an iptables
REJECT on its TCP 16509 inside the destination host), after the base image, the disk files, the DHCP entry and the
user data were set up there: MigrateVm fails with HOST.1009, the guest still runs on the source (same boot id),
and the destination has no domain, no disk file and no flat entry of the VM; capacities are as before."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import test_compute as tc
from lab import PS_URL, Testbed, TinyImage
from test_flatnet import Flat, _cli, flat_lab

MiB = 1 << 20
BOOT = "cat /proc/sys/kernel/random/boot_id; cut -d' ' -f1 /proc/uptime"


@pytest.fixture
async def lab(testbed: Testbed, tiny: TinyImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Flat]:
    async with flat_lab("migration", testbed, tiny, tmp_path, services=True,
                        paths=(PS_URL, "/var/lib/zstack-py/console"), log_tail=40, agent_out_tail=30) as lab:
        monkeypatch.setenv("ZSTACK_URL", lab.ctl.url)
        monkeypatch.setenv("ZSTACK_CLI_HOME", str(tmp_path / "cli"))
        yield lab


async def _hosts(lab: Flat) -> dict[str, dict[str, Any]]:
    return {h["uuid"]: h for h in (await lab.ctl.inv("QueryHost", conditions=[]))["inventories"]}


async def _capacity(lab: Flat) -> dict[str, tuple[int, int]]:
    return {u: (h["availableCpuCapacity"], h["availableMemoryCapacity"]) for u, h in (await _hosts(lab)).items()}


async def _ls(lab: Flat) -> tuple[dict[str, int], dict[str, str]]:
    """(host uuid → available local storage, volume uuid → host uuid of its LocalStorageResourceRef)."""
    ps = (await lab.ctl.inv("QueryPrimaryStorage", conditions=[]))["inventories"][0]["uuid"]
    caps = (await lab.ctl.inv("GetLocalStorageHostDiskCapacity", primaryStorageUuid=ps))["inventories"]
    refs = (await lab.ctl.inv("QueryLocalStorageResourceRef", conditions=[]))["inventories"]
    return {c["hostUuid"]: c["availableCapacity"] for c in caps}, {r["resourceUuid"]: r["hostUuid"] for r in refs}


def _flat_has(status: Any, vm: dict[str, Any]) -> bool:
    mac = vm["vmNics"][0]["mac"].lower()
    return any(vm["uuid"] in st.userdataVms or any(e.mac.lower() == mac for e in st.entries) for st in status)


async def _guest(lab: Flat, vm: dict[str, Any]) -> tuple[str, float, int]:
    """(boot id, uptime, the background counter) read over SSH."""
    out = (await lab.ssh_ok(vm, BOOT + "; cat /tmp/counter", timeout=180)).split()
    return out[0], float(out[1]), int(out[2])


async def _migrate_job(lab: Flat, vm_uuid: str, dest: str | None) -> dict[str, Any]:
    """MigrateVm as a background job, polled: its progress while it runs (printed), its inventory at the end."""
    ctl, auth = lab.ctl, {"Authorization": f"OAuth {lab.ctl.session}"}
    r = await ctl.client.post("/v1/MigrateVm?async=true", json={"vmInstanceUuid": vm_uuid, "hostUuid": dest},
                              headers=auth)
    assert r.status == 202, await r.text()
    job_uuid = (await r.json())["jobUuid"]
    stages: list[str] = []
    peak: dict[str, int] = {}
    while True:
        job = await (await ctl.client.get(f"/v1/jobs/{job_uuid}", headers=auth)).json()
        if job["state"] != "Processing":
            break
        for item in (job.get("progress") or {}).get("items", {}).values():
            if not stages or stages[-1] != item["stage"]:
                stages.append(item["stage"])
            for k in ("memoryProcessed", "memoryTotal", "diskProcessed", "diskTotal", "percent"):
                peak[k] = max(peak.get(k, 0), int(item.get(k) or 0))
        await asyncio.sleep(0.1)
    print(f"\nMigrateVm job progress seen: stages {stages}, peaks {peak}", file=sys.__stderr__)  # past capsys
    assert job["state"] == "Succeeded", job
    assert stages and set(stages) <= {"preparing", "migrating", "migrated"}, stages
    return dict(job["result"]["inventory"])


@contextlib.asynccontextmanager
async def states_seen(ctl: Any, vm_uuid: str) -> AsyncIterator[set[str]]:
    """The VM states an API client sees (polled every 0.1 s) while the block runs: a moving VM must never look
    Stopped or Unknown."""
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            seen.add((await ctl.vm(vm_uuid))["state"])
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        watcher.cancel()


def host_capacity_moved(vm: dict[str, Any], before: dict[str, Any], after: dict[str, Any], src: str,
                        dest: str) -> None:
    """The VM's CPU and memory went back to ``src`` and were taken on ``dest``, exactly once."""
    cpu, mem = vm["cpuNum"] * vm["cpuSpeed"], vm["memorySize"]
    assert after[src]["availableCpuCapacity"] == before[src]["availableCpuCapacity"] + cpu
    assert after[dest]["availableCpuCapacity"] == before[dest]["availableCpuCapacity"] - cpu
    assert after[src]["availableMemoryCapacity"] == before[src]["availableMemoryCapacity"] + mem
    assert after[dest]["availableMemoryCapacity"] == before[dest]["availableMemoryCapacity"] - mem


async def guest_moved_intact(lab: Flat, vm_uuid: str, before: tuple[str, float, int], src: str,
                             dest: str) -> dict[str, Any]:
    """The same guest (boot id), still running (uptime and counter grew), reached through the new host's flat
    namespace: its lease renewed from the new host's dnsmasq, its user data served there. The VM's inventory."""
    boot, up, count = before
    vm = await lab.ctl.vm(vm_uuid)
    boot2, up2, count2 = await _guest(lab, vm)
    assert boot2 == boot and up2 > up and count2 > count, (boot, up, count, boot2, up2, count2)
    assert _flat_has(await lab.status(dest), vm) and not _flat_has(await lab.status(src), vm)
    renew = await lab.ssh(vm, "busybox timeout 20 udhcpc -i eth0 -n -q -t 5 -T 2 -s /bin/true")
    assert renew.returncode == 0, f"no lease from the new host's dnsmasq: {renew.stdout} {renew.stderr}"
    ud = await lab.ssh_ok(vm, "wget -q -O - http://169.254.169.254/latest/user-data")
    assert lab.pub.split()[1] in ud, ud
    return dict(vm)


async def _migrate(lab: Flat, vm: dict[str, Any], dest: str | None, volumes: list[dict[str, Any]],
                   capsys: pytest.CaptureFixture[str] | None = None) -> dict[str, Any]:
    """MigrateVm to ``dest`` (None: through zstack-cli without a host) and every check of the module docstring."""
    ctl = lab.ctl
    src = vm["hostUuid"]
    boot, up, count = await _guest(lab, vm)
    hosts, (caps, _) = await _hosts(lab), await _ls(lab)
    if capsys is not None:
        cands = (await _cli(f"GetVmMigrationCandidateHosts vmInstanceUuid={vm['uuid']}", capsys))["inventories"]
    else:
        cands = (await ctl.inv("GetVmMigrationCandidateHosts", vmInstanceUuid=vm["uuid"]))["inventories"]
    assert [h["uuid"] for h in cands] == [h for h in hosts if h != src], cands
    t0 = time.monotonic()
    async with states_seen(ctl, vm["uuid"]) as seen:
        if capsys is not None:
            moved = (await _cli(f"MigrateVm vmInstanceUuid={vm['uuid']}", capsys))["inventory"]
        else:
            moved = await _migrate_job(lab, vm["uuid"], dest)
    assert seen <= {"Running", "Migrating"}, seen
    print(f"\nMigrateVm {src[:8]} -> {moved['hostUuid'][:8]}: {time.monotonic() - t0:.1f} s")
    dest = dest or next(h for h in hosts if h != src)
    assert (moved["state"], moved["hostUuid"], moved["lastHostUuid"]) == ("Running", dest, src), moved
    assert tc._domstate(lab.hosts[dest], vm["uuid"]) == "running"
    assert tc._domstate(lab.hosts[src], vm["uuid"]) == "absent"
    # CPU/memory moved exactly once; local storage of the volumes moved with their refs
    after, (caps2, refs2) = await _hosts(lab), await _ls(lab)
    host_capacity_moved(vm, hosts, after, src, dest)
    size = sum(v["size"] for v in volumes)
    assert all(refs2[v["uuid"]] == dest for v in volumes), refs2
    assert caps2[src] - caps[src] == caps[dest] - caps2[dest] > 0, (caps, caps2, size)
    for v in volumes:
        assert lab.hosts[src].run("test", "-e", v["installPath"], check=False).returncode != 0, v["installPath"]
        assert lab.hosts[dest].run("test", "-f", v["installPath"], check=False).returncode == 0, v["installPath"]
    vm = await guest_moved_intact(lab, vm["uuid"], (boot, up, count), src, dest)
    assert (await lab.ssh_ok(vm, "dd if=/dev/vdb bs=512 count=1 iflag=direct 2>/dev/null | head -c 9")) == "migrated!"
    return vm


async def _fails_half_way(lab: Flat, vm: dict[str, Any], dest: str, volumes: list[dict[str, Any]]) -> None:
    ctl, src = lab.ctl, vm["hostUuid"]
    boot, _, _ = await _guest(lab, vm)
    before = (await _capacity(lab), await _ls(lab))
    block = ["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "16509", "-j", "REJECT"]
    lab.hosts[dest].run(*block)
    try:
        status, body = await ctl.raw("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=dest)
    finally:
        lab.hosts[dest].run("iptables", "-D", *block[2:])
    assert status >= 400 and body["error"]["code"] == "HOST.1009", body
    assert "still runs on the source host" in body["error"]["details"], body
    now = await ctl.vm(vm["uuid"])
    assert (now["state"], now["hostUuid"]) == ("Running", src), now
    assert (await _capacity(lab), await _ls(lab)) == before
    assert tc._domstate(lab.hosts[dest], vm["uuid"]) == "absent"
    assert tc._domstate(lab.hosts[src], vm["uuid"]) == "running"
    for v in volumes:
        assert lab.hosts[dest].run("test", "-e", v["installPath"], check=False).returncode != 0, v["installPath"]
    assert not _flat_has(await lab.status(dest), vm) and _flat_has(await lab.status(src), vm)
    assert (await _guest(lab, now))[0] == boot


async def test_live_migration_with_local_storage(lab: Flat, capsys: pytest.CaptureFixture[str]) -> None:
    ctl = lab.ctl
    ha, hb = list(lab.hosts)
    off = await ctl.inv("CreateDiskOffering", name="d", diskSize=64 * MiB)
    vm = await ctl.inv("CreateVmInstance", name="mig", instanceOfferingUuid=ctl.ids["offering"],
                       imageUuid=ctl.ids["image"], l3NetworkUuids=[ctl.ids["l3"]], hostUuid=ha,
                       dataDiskOfferingUuids=[off["uuid"]], systemTags=[f"sshkey::{lab.pub}"])
    await lab.wait_console(vm, r"tiny: LEASE eth0", timeout=300)
    # a counter inside the guest that must keep counting across both migrations
    await lab.ssh_ok(vm, "echo 0 > /tmp/counter; (while true; do echo $(( $(cat /tmp/counter) + 1 )) > "
                         "/tmp/counter.n && mv /tmp/counter.n /tmp/counter; sleep 1; done) </dev/null >/dev/null "
                         "2>&1 & printf migrated! | dd of=/dev/vdb bs=512 conv=fsync 2>/dev/null && sync",
                     timeout=240)
    await asyncio.sleep(2)
    vols = (await ctl.inv("QueryVolume", conditions=[{"name": "vmInstanceUuid", "op": "=", "value": vm["uuid"]}])
            )["inventories"]
    root = next(v for v in vols if v["type"] == "Root")
    data = next(v for v in vols if v["type"] == "Data")
    assert data["status"] == "Ready", data
    vm = await ctl.vm(vm["uuid"])
    await _fails_half_way(lab, vm, hb, [root, data])
    vm = await _migrate(lab, vm, hb, [root, data])
    await _cli("LogInByAccount accountName=admin password=password", capsys)
    vm = await _migrate(lab, vm, None, [root, data], capsys)  # automatic choice: the only other host
    assert vm["hostUuid"] == ha
    # maintenance empties the host: the running guest goes to the other host, still the same boot
    boot, _, count = await _guest(lab, vm)
    t0 = time.monotonic()
    host = await ctl.inv("ChangeHostState", uuid=ha, stateEvent="maintain")
    print(f"\nChangeHostState maintain with one running VM: {time.monotonic() - t0:.1f} s")
    assert host["state"] == "Maintenance", host
    vm = await ctl.vm(vm["uuid"])
    assert (vm["state"], vm["hostUuid"], vm["lastHostUuid"]) == ("Running", hb, ha), vm
    boot2, _, count2 = await _guest(lab, vm)
    assert boot2 == boot and count2 > count, (boot, count, boot2, count2)
    assert (await ctl.inv("ChangeHostState", uuid=ha, stateEvent="enable"))["state"] == "Enabled"
    await asyncio.sleep(12)  # past the agents' judger window: no late event moved or stopped the VM
    vm = await ctl.vm(vm["uuid"])
    assert (vm["state"], vm["hostUuid"]) == ("Running", hb), vm
    assert tc._domstate(lab.hosts[hb], vm["uuid"]) == "running" and tc._domstate(lab.hosts[ha], vm["uuid"]) == "absent"
