"""Security-group benchmark (root). Prints figures; everything runs in namespaces it creates and removes.

1. One host: render + apply (one ``nft -f``) of 1,000 rules over 200 NICs, a changed set, restore after a
   hand flush (reconcile), the in-sync check.
2. AddSecurityGroupRule through the real controller API until every affected host enforces it, with N real
   in-process agents (libvirt test driver), each applying into its own host namespace (target <= 1 s for 100).
3. Packet path: TCP throughput between two namespaces on one bridge, without rules and with the receiver's NIC
   holding 1,000 rules (the allowing rule last, so every packet of the original direction walks them all).

usage: secgroup_bench.py [--nics 200] [--rules 1000] [--hosts 100] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "functional"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import flatnet_env as fe
from machine import describe
from pyroute2 import netns
from secgroup_lab import running_lab
from test_secgroup_enforce import in_ns

from flatnet.secgroup import SgNic, SgRule, render
from kvmagent.secgroup import SecurityGroupService
from zsutil.runner import run


def rules_for(i: int, per_nic: int) -> tuple[SgRule, ...]:
    out = []
    for k in range(per_nic):
        proto = ("TCP", "UDP", "ICMP")[k % 3]
        ports = (8, 0) if proto == "ICMP" else (1000 + k * 10, 1005 + k * 10)
        out.append(SgRule("Ingress" if k % 4 else "Egress", proto, *ports,
                          (f"10.{i % 200}.{k % 250}.0/24", f"172.16.{k % 250}.{i % 250}")))
    return tuple(out)


async def one_host(env: fe.Env, args: argparse.Namespace) -> None:
    per_nic = max(1, args.rules // args.nics)
    nics = [SgNic(tap=f"bn{i}", mac=f"fa:16:3e:00:{i >> 8:02x}:{i & 255:02x}", ips=(f"10.99.{i // 250}.{i % 250 + 1}",),
                  rules=rules_for(i, per_nic), host_service_ips=("10.99.0.254",)) for i in range(args.nics)]
    nrules = sum(len(n.rules) for n in nics)
    t = time.perf_counter()
    rendered = render(nics, 1)
    t_render = time.perf_counter() - t
    sg = SecurityGroupService(env.tmp / "sg", host_netns=env.host, interval=3600)
    times = []
    for gen in range(1, 6):
        t = time.perf_counter()
        await sg.apply(gen, nics)
        times.append(time.perf_counter() - t)
    print(f"[one host] {nrules} rules over {len(nics)} NICs -> {sum(rendered.rule_counts.values())} nft rules, "
          f"{len(rendered.text) / 1024:.0f} KiB script")
    print(f"[one host] render {t_render * 1000:.1f} ms; apply (render + sysctl + nft -f + state file) "
          f"first {times[0] * 1000:.0f} ms, next 4 median {statistics.median(times[1:]) * 1000:.0f} ms")
    changed = [*nics[:-1], SgNic(tap="bn-new", mac="fa:16:3e:99:00:01", ips=("10.99.9.9",),
                                   rules=rules_for(7, per_nic))]
    t = time.perf_counter()
    await sg.apply(10, changed)
    print(f"[one host] replace the set with one NIC changed: {(time.perf_counter() - t) * 1000:.0f} ms")
    t = time.perf_counter()
    ok = await sg.in_sync()
    print(f"[one host] in-sync check (nft -j list, both tables): {(time.perf_counter() - t) * 1000:.0f} ms ({ok})")
    await run(["ip", "netns", "exec", env.host, "nft", "delete", "table", "inet", "zstack_sg"], timeout=30)
    t = time.perf_counter()
    restored = await sg.reconcile()
    print(f"[one host] reconcile after a hand flush: {(time.perf_counter() - t) * 1000:.0f} ms (restored={restored})")


async def many_hosts(tmp: Path, args: argparse.Namespace) -> None:
    names = [f"sgbh{i}" for i in range(args.hosts)]
    for n in names:
        netns.create(n)
    try:
        async with running_lab(tmp / "lab") as lab:
            t = time.perf_counter()
            for i, n in enumerate(names):
                await lab.agent(n, index=i)
            print(f"[{args.hosts} hosts] {args.hosts} agents started in {time.perf_counter() - t:.1f} s")
            api = lab.api
            sg = await api.inv("CreateSecurityGroup", name="bench")
            await api.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=lab.l3)
            nic_uuids = []
            for i, a in enumerate(lab.agents):
                _, nic = await lab.vm(a.host_uuid, ip=f"10.98.{i // 250}.{i % 250 + 1}",
                                      mac=f"fa:16:3e:98:{i >> 8:02x}:{i & 255:02x}", tap=f"vnic{9000 + i}.0")
                nic_uuids.append(nic)
            t = time.perf_counter()
            await api.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=nic_uuids)
            print(f"[{args.hosts} hosts] AddVmNicToSecurityGroup of {len(nic_uuids)} NICs -> all hosts pushed: "
                  f"{time.perf_counter() - t:.2f} s")
            samples = []
            for k in range(5):
                t = time.perf_counter()
                await api.call("AddSecurityGroupRule", securityGroupUuid=sg["uuid"], rules=[
                    {"type": "Ingress", "protocol": "TCP", "startPort": 2000 + k, "allowedCidr": "10.0.0.0/8"}])
                while True:
                    behind = await lab.core.db.fetchone(
                        "SELECT COUNT(*) FROM SecurityGroupHostState WHERE appliedGeneration < wantedGeneration")
                    if behind[0] == 0:
                        break
                    await asyncio.sleep(0.01)
                samples.append(time.perf_counter() - t)
            enforced = sum(1 for a in lab.agents if any(r.start_port == 2004 for r in a.secgroup.nics[0].rules))
            print(f"[{args.hosts} hosts] AddSecurityGroupRule -> enforced on all {enforced}/{args.hosts} hosts: "
                  f"median {statistics.median(samples):.2f} s, max {max(samples):.2f} s over {len(samples)} runs "
                  "(target <= 1 s for 100)")
    finally:
        for n in names:
            netns.remove(n)


def throughput(env: fe.Env, a: fe.Vm, ip: str, seconds: float) -> float:
    """MB/s of one TCP stream from ``a`` to ``ip``:5201 (a sink thread in the peer namespace)."""
    buf = b"\0" * (256 << 10)
    s = in_ns(a.netns, lambda: socket.create_connection((ip, 5201), timeout=5))
    sent, end = 0, time.perf_counter() + seconds
    t0 = time.perf_counter()
    with s:
        while time.perf_counter() < end:
            s.sendall(buf)
            sent += len(buf)
    return sent / (time.perf_counter() - t0) / 1e6


async def packet_path(env: fe.Env, args: argparse.Namespace) -> None:
    a, b = await env.add_vm("ta"), await env.add_vm("tb")
    await env.set_addr(a, "10.97.0.1")
    await env.set_addr(b, "10.97.0.2")
    srv = in_ns(b.netns, lambda: socket.create_server(("0.0.0.0", 5201)))

    def sink() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                while c.recv(1 << 20):
                    pass
    threading.Thread(target=sink, daemon=True).start()
    sg = SecurityGroupService(env.tmp / "sg2", host_netns=env.host, interval=3600)
    try:
        base = [await asyncio.to_thread(throughput, env, a, "10.97.0.2", args.seconds) for _ in range(2)]
        filler = [SgRule("Ingress", "TCP", 10000 + k % 50000, 10000 + k % 50000, (f"192.168.{k % 250}.0/24",))
                  for k in range(args.rules - 1)]
        await sg.apply(1, [SgNic(tap=b.tap, mac=b.mac, ips=("10.97.0.2",),
                                 rules=(*filler, SgRule("Ingress", "TCP", 5201, 5201, ("10.97.0.1/32",))))])
        ruled = [await asyncio.to_thread(throughput, env, a, "10.97.0.2", args.seconds) for _ in range(2)]
        await sg.apply(2, [])
        print(f"[packet path] one TCP stream A->B: {max(base):.0f} MB/s without rules, {max(ruled):.0f} MB/s with "
              f"{args.rules} rules on B (the allowing one last): {max(ruled) / max(base):.2f}x")
    finally:
        srv.close()


async def main(args: argparse.Namespace) -> None:
    print(describe())
    res = await run(["nft", "--version"], timeout=10)
    print(res.stdout.strip())
    tmp = Path(tempfile.mkdtemp(prefix="secgroup-bench-"))
    env = await asyncio.to_thread(fe._make_env, tmp)
    try:
        await one_host(env, args)
        await packet_path(env, args)
    finally:
        await fe._teardown(env)
    if args.hosts:
        await many_hosts(tmp, args)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nics", type=int, default=200)
    p.add_argument("--rules", type=int, default=1000)
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(p.parse_args()))
