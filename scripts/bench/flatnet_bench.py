"""flatnet benchmark (root): apply 1,000 NICs on one host, reconcile them after a restart (target <= 2 s),
DHCP leases per second from real busybox udhcpc clients, user-data requests per second. Prints figures.

usage: flatnet_bench.py [--nics 1000] [--clients 20] [--requests 2000]
Everything runs in namespaces this script creates and removes (traffic stays inside them).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "functional"))

import flatnet_env as fe

from flatnet.model import UserdataSpec


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="flatnet-bench-"))
    env = await asyncio.to_thread(fe._make_env, tmp)
    try:
        svc = env.service()
        await svc.start()
        l3 = env.l3(cidr_prefix="10.90.0", netmask="255.255.0.0")
        vms = [await env.add_vm(f"c{i}") for i in range(args.clients)]
        nics = [env.nic(v, l3, f"10.90.1.{i + 1}", netmask="255.255.0.0") for i, v in enumerate(vms)]
        for i in range(args.nics - len(nics)):
            mac = f"52:54:01:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"
            ip = f"10.90.{2 + i // 250}.{1 + i % 250}"
            nics.append(env.nic(vms[0], l3, ip, netmask="255.255.0.0").model_copy(
                update={"mac": mac, "vm_uuid": f"vm{i}", "tap": f"bt{i}", "hostname": f"h{i}"}))
        t = time.perf_counter()
        await svc.apply_dhcp([l3], nics, rebuild=False)
        print(f"apply {len(nics)} NICs (one request): {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        await svc.apply_dhcp([], [nics[-1].model_copy(update={"ip": "10.90.200.1"})], rebuild=False)
        print(f"apply 1 NIC change with {len(nics)} present: {time.perf_counter() - t:.2f} s")
        await svc.stop()
        svc2 = env.service()
        t = time.perf_counter()
        await svc2.start()
        print(f"reconcile {len(nics)} NICs after restart: {time.perf_counter() - t:.2f} s (target <= 2 s)")
        t = time.perf_counter()
        leases = await asyncio.gather(*(env.udhcpc(v) for v in vms))
        dt = time.perf_counter() - t
        print(f"DHCP: {sum(1 for x in leases if x)}/{len(vms)} leases by {len(vms)} concurrent udhcpc in "
              f"{dt:.2f} s = {len(vms) / dt:.1f} leases/s (includes process start of each client)")
        vm = vms[0]
        await env.configure(vm, leases[0] or {})
        await svc2.apply_userdata(UserdataSpec(vm_uuid="vm-c0", l3_uuid=l3.uuid, vm_ip="10.90.1.1",
                                               userdata="#cloud-config\n"))
        n = args.requests
        t = time.perf_counter()
        res = await env.in_vm(vm, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\n", "--parallel",
                              "--parallel-max", "16", *(["http://169.254.169.254/latest/user-data"] * n),
                              timeout=300)
        dt = time.perf_counter() - t
        ok = res.stdout.split().count("200")
        print(f"user-data: {ok}/{n} requests (curl --parallel 16) in {dt:.2f} s = {n / dt:.0f} req/s")
        await svc2.apply_dhcp([], [], rebuild=True)
        await svc2.stop()
    finally:
        await fe._teardown(env)
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--nics", type=int, default=1000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(p.parse_args()))
