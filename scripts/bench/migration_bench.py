#!/usr/bin/env python3
"""Benchmark: MigrateVm of a running tiny TCG guest between two testbed hosts, on local and on shared storage.

Brings up its own 2-host testbed (state /var/lib/zstack-py-testbed-bench-mig, prefix ``bm``, 10.94.0.0/24), an
in-process controller, and a VM of the e2e records (1 vCPU, 128 MiB) with a data volume of ``--disk-mib`` MiB
filled with a pattern on the host (qemu-io) before the guest starts. Then migrates it ``--runs`` times back and
forth and prints per migration: MigrateVm's wall time, libvirt's downtime and bytes processed as the destination
reports them (``virsh domjobinfo --completed``), and the disk copy's throughput against ``cp`` of the same
volume file on the source host (best of both).

Shared storage (``--case shared``; issue 15 targets under TCG: MigrateVm <= 3 s, downtime <= 300 ms): the same
128 MiB guest with its root volume on a SharedMountPoint primary storage (SHARED_URL, one directory both hosts
see; NFS cannot run on the lab kernel) and a Flat DHCP address, migrated ``--runs`` times back and forth with no
disk copy. Per migration: MigrateVm's wall time, libvirt's downtime, and the guest's downtime seen from the
network: the longest gap between consecutive ICMP echo replies (every 10 ms, pinger.py) from a probe namespace on
the hosts' physical L2 segment, which reaches the guest on either host. Needs root; run it through /work/wt/run-heavy:

    /opt/zstack-py/venv/bin/python scripts/bench/migration_bench.py [--case local|shared|both] [--runs 4]
        [--disk-mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).parent))

from lab import PS_URL, LabHost, Testbed, bring_up, reset_host, tear_down, tiny_image
from machine import describe
from test_compute import running_controller

STATE = Path("/var/lib/zstack-py-testbed-bench-mig")
MiB = 1 << 20
SHARED_URL = "/zstack_ps/bench-shared"  # inside the agents' default storage_roots; plain hosts see this machine's
PROBE_NS, PROBE_LINK, PROBE_IP = "bm-probe", "bm-probe-p", "10.100.0.250/24"  # outside the records' IP range


def jobinfo(host: LabHost, vm: str) -> dict[str, str]:
    cp = host.run("virsh", "-c", "qemu:///system", "domjobinfo", vm, "--completed", check=False)
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in cp.stdout.splitlines()) if v}


def cp_seconds(host: LabHost, path: str) -> float:
    t0 = time.monotonic()
    host.run("sh", "-c", f"cp --sparse=never {path} /var/tmp/bench-cp && sync /var/tmp/bench-cp", timeout=900)
    took = time.monotonic() - t0
    host.run("rm", "-f", "/var/tmp/bench-cp")
    return took


async def main(args: argparse.Namespace) -> None:
    print(describe())
    tear_down(STATE)
    tb = bring_up(STATE, hosts=2, prefix="bm", mgmt_net="10.94.0")
    try:
        if args.case in ("local", "both"):
            await local_case(args, tb)
        if args.case in ("shared", "both"):
            await shared_case(args, tb)
    finally:
        tear_down(STATE)


async def local_case(args: argparse.Namespace, tb: Testbed) -> None:
    tiny = tiny_image()
    async with running_controller("migration-bench", tiny) as c:
        hosts = {(await c.add_host(h))["uuid"]: h for h in tb.hosts}
        ha, hb = list(hosts)
        off = await c.inv("CreateDiskOffering", name="d", diskSize=args.disk_mib * MiB)
        vm = await c.inv("CreateVmInstance", name="bench", instanceOfferingUuid=c.ids["offering"],
                         imageUuid=c.ids["image"], l3NetworkUuids=[c.ids["l3"]], hostUuid=ha,
                         dataDiskOfferingUuids=[off["uuid"]])
        await c.inv("StopVmInstance", uuid=vm["uuid"], type="cold")
        vols = (await c.inv("QueryVolume", conditions=[{"name": "vmInstanceUuid", "op": "=",
                                                          "value": vm["uuid"]}]))["inventories"]
        data = next(v for v in vols if v["type"] == "Data")
        hosts[ha].run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {args.disk_mib}M", data["installPath"],
                      timeout=900)
        await c.inv("StartVmInstance", uuid=vm["uuid"])
        await asyncio.sleep(15)  # let the guest boot
        cp_best = min(cp_seconds(hosts[ha], data["installPath"]) for _ in range(2))
        disk_bytes = args.disk_mib * MiB
        print(f"guest 128 MiB RAM, data volume {args.disk_mib} MiB written; cp of the volume file: "
              f"{cp_best:.2f} s ({disk_bytes / cp_best / 1e6:.0f} MB/s)")
        src, dst = ha, hb
        best = float("inf")
        for i in range(args.runs):
            t0 = time.monotonic()
            moved = await c.inv("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=dst)
            took = time.monotonic() - t0
            assert moved["hostUuid"] == dst, moved
            info = jobinfo(hosts[dst], vm["uuid"])
            down = info.get("Total downtime", "?")
            data_mib = re.sub(r"\s+", " ", info.get("Data processed", "?"))
            best = min(best, took)
            print(f"run {i + 1}: {src[:8]} -> {dst[:8]} MigrateVm {took:.2f} s; downtime {down}; "
                  f"data processed {data_mib}; disk throughput {disk_bytes / took / 1e6:.0f} MB/s "
                  f"({cp_best / took:.2f}x cp)")
            src, dst = dst, src
        print(f"best MigrateVm {best:.2f} s = {cp_best / best:.2f}x cp of the data volume file")
        for h in tb.hosts:
            reset_host(h, paths=(PS_URL, "/var/lib/zstack-py/console"))


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def clear_shared() -> None:
    root = Path(SHARED_URL)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def probe_up(tb: Testbed) -> None:
    """A namespace with an address on the guests' L3, its veth in the testbed's physical bridge."""
    probe_down()
    sh("ip", "netns", "add", PROBE_NS)
    sh("ip", "link", "add", PROBE_LINK, "type", "veth", "peer", "name", "probe0", "netns", PROBE_NS)
    sh("ip", "link", "set", PROBE_LINK, "netns", tb.phys_netns)
    sh("ip", "-n", tb.phys_netns, "link", "set", PROBE_LINK, "master", "br_phys", "up")
    sh("ip", "-n", PROBE_NS, "addr", "add", PROBE_IP, "dev", "probe0")
    sh("ip", "-n", PROBE_NS, "link", "set", "probe0", "up")
    sh("ip", "-n", PROBE_NS, "link", "set", "lo", "up")


def probe_down() -> None:
    subprocess.run(["ip", "netns", "del", PROBE_NS], capture_output=True, timeout=30)  # the veth pair goes too


PINGER = [sys.executable, str(Path(__file__).with_name("pinger.py"))]


def ping_gap(output: str) -> tuple[float, int]:
    """(longest gap in seconds between consecutive replies, replies) of pinger.py's ``<time> <seq>`` lines."""
    times = [float(ln.split()[0]) for ln in output.splitlines() if len(ln.split()) == 2]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return (max(gaps) if gaps else float("inf")), len(times)


async def wait_ping(ip: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cp = await asyncio.to_thread(subprocess.run, ["timeout", "2", "ip", "netns", "exec", PROBE_NS, *PINGER,
                                                      "--interval", "0.2", ip], capture_output=True, text=True)
        if cp.stdout.strip():
            return
    raise TimeoutError(f"the guest {ip} does not answer ping after {timeout} s")


async def shared_case(args: argparse.Namespace, tb: Testbed) -> None:
    tiny = tiny_image()
    clear_shared()
    probe_up(tb)
    try:
        async with running_controller("migration-bench-shared", tiny) as c:
            hosts = {(await c.add_host(h))["uuid"]: h for h in tb.hosts}
            ha, hb = list(hosts)
            local = (await c.inv("QueryPrimaryStorage", conditions=[]))["inventories"][0]["uuid"]
            await c.inv("DetachPrimaryStorageFromCluster", primaryStorageUuid=local, clusterUuid=c.ids["cluster"])
            zone = (await c.inv("QueryZone", conditions=[]))["inventories"][0]["uuid"]
            ps = await c.inv("AddSharedMountPointPrimaryStorage", name="smp", zoneUuid=zone, url=SHARED_URL)
            await c.inv("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=c.ids["cluster"])
            await c.attach_flat()
            vm = await c.inv("CreateVmInstance", name="bench-smp", instanceOfferingUuid=c.ids["offering"],
                             imageUuid=c.ids["image"], l3NetworkUuids=[c.ids["l3"]], hostUuid=ha)
            ip = vm["vmNics"][0]["ip"]
            await wait_ping(ip, 300)
            await asyncio.sleep(5)
            print(f"shared storage (SharedMountPoint {SHARED_URL}): guest {vm['memorySize'] // MiB} MiB RAM, TCG; "
                  "targets MigrateVm <= 3 s, downtime <= 300 ms")
            src, dst = ha, hb
            walls, downs = [], []
            for i in range(args.runs):
                ping = await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", PROBE_NS, *PINGER, "--interval", "0.01", ip,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
                await asyncio.sleep(1)
                t0 = time.monotonic()
                moved = await c.inv("MigrateVm", vmInstanceUuid=vm["uuid"], hostUuid=dst)
                took = time.monotonic() - t0
                await asyncio.sleep(1.5)
                ping.terminate()
                out, _ = await ping.communicate()
                assert moved["hostUuid"] == dst, moved
                gap, replies = ping_gap(out.decode())
                info = jobinfo(hosts[dst], vm["uuid"])
                walls.append(took)
                downs.append(gap)
                down = " ".join(info.get("Total downtime", "?").split())
                print(f"run {i + 1}: {src[:8]} -> {dst[:8]} MigrateVm {took:.2f} s; ping gap {gap * 1000:.0f} ms "
                      f"({replies} replies); libvirt downtime {down}; data processed "
                      f"{re.sub(r'[ ]+', ' ', info.get('Data processed', '?'))}")
                src, dst = dst, src
            walls.sort()
            downs.sort()
            print(f"shared storage: MigrateVm median {walls[len(walls) // 2]:.2f} s (best {walls[0]:.2f}, worst "
                  f"{walls[-1]:.2f}); ping gap median {downs[len(downs) // 2] * 1000:.0f} ms (best "
                  f"{downs[0] * 1000:.0f}, worst {downs[-1] * 1000:.0f})")
            for h in tb.hosts:
                reset_host(h, flat=True, paths=(PS_URL, "/var/lib/zstack-py/console"))
    finally:
        probe_down()
        shutil.rmtree(SHARED_URL, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=("local", "shared", "both"), default="both")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--disk-mib", type=int, default=1024)
    asyncio.run(main(p.parse_args()))
