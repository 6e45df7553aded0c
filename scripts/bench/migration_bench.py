#!/usr/bin/env python3
"""Benchmark: MigrateVm of a running tiny TCG guest on local primary storage between two testbed hosts.

Brings up its own 2-host testbed (state /var/lib/zstack-py-testbed-bench-mig, prefix ``bm``, 10.94.0.0/24), an
in-process controller, and a VM of the e2e records (1 vCPU, 128 MiB) with a data volume of ``--disk-mib`` MiB
filled with a pattern on the host (qemu-io) before the guest starts. Then migrates it ``--runs`` times back and
forth and prints per migration: MigrateVm's wall time, libvirt's downtime and bytes processed as the destination
reports them (``virsh domjobinfo --completed``), and the disk copy's throughput against ``cp`` of the same
volume file on the source host (best of both). Needs root; run it through /work/wt/run-heavy:

    /opt/zstack-py/venv/bin/python scripts/bench/migration_bench.py [--runs 4] [--disk-mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).parent))

from lab import PS_URL, LabHost, bring_up, reset_host, tear_down, tiny_image
from machine import describe
from test_compute import running_controller

STATE = Path("/var/lib/zstack-py-testbed-bench-mig")
MiB = 1 << 20


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
    tiny = tiny_image()
    tear_down(STATE)
    tb = bring_up(STATE, hosts=2, prefix="bm", mgmt_net="10.94.0")
    try:
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
    finally:
        tear_down(STATE)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--disk-mib", type=int, default=1024)
    asyncio.run(main(p.parse_args()))
