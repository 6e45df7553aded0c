#!/opt/zstack-py/venv/bin/python
"""Benchmark: CreateVmInstance through the real HTTP API onto simulated hosts (real agents over libvirt's
test driver with the real StorageService: image cache + qcow2 overlays by qemu-img).

    scripts/bench/create_vms.py [--vms 10000] [--hosts 100] [--concurrency 32] [--agent-procs 2] [--tls]

The agents run in ``--agent-procs`` child processes (so their RSS is measured apart; on a real cloud every
host runs its own), each agent on its own loopback address 127.0.10.x:7070; the controller runs in this
process on 127.0.0.1. All simulated hosts share one local primary storage directory (one filesystem).
Prints progress every 10 s, then VMs/s, p50/p99 create latency, how many VMs QueryVmInstance counts
Running, failed creates, and the RSS of controller and agents. The simulated agents speak plain HTTP unless
``--tls`` is given: then each gets a certificate from the controller's CA and serves HTTPS, the controller
pins the CA and the agents report to its TLS events listener, as deployed agents do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

GiB, MiB = 1 << 30, 1 << 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_agents(first: int, n: int, out: Path, controller: str, base: Path, tls_dir: str) -> None:
    """Child: n agents on 127.0.10.<first + 1>.. until SIGTERM (HTTPS with certificates from the CA in
    ``tls_dir`` when it is not empty)."""
    from controller import pki
    from kvmagent.config import AgentConfig
    from kvmagent.contract.tls import server_context
    from kvmagent.driver.libvirt_driver import LibvirtDriver
    from kvmagent.driver.testnode import write_node_xml
    from kvmagent.server import create_app, wait_ready
    from storage.service import StorageService

    runners, hosts = [], []
    for i in range(first, first + n):
        hu, ip = uuid.uuid4().hex, f"127.0.{10 + (i + 1) // 250}.{(i + 1) % 250 + 1}"
        sd = base / hu
        uri = write_node_xml(sd / "node.xml", cpus=16, mhz=2000, memory_bytes=64 * GiB)
        tls: dict[str, Path] = {}
        if tls_dir:
            ca = pki.ensure_ca(Path(tls_dir))
            issued = pki.issue(ca, f"bench agent {hu}", [ip])
            (sd / "tls").mkdir(parents=True, exist_ok=True)
            tls = {"tls_cert": sd / "tls" / "agent.crt", "tls_key": sd / "tls" / "agent.key",
                   "tls_ca": sd / "tls" / "ca.crt"}
            pki.write_private(tls["tls_cert"], issued.cert_pem)
            pki.write_private(tls["tls_key"], issued.key_pem)
            pki.write_private(tls["tls_ca"], ca.cert_pem)
        cfg = AgentConfig(host_uuid=hu, token=secrets.token_hex(16), controller_url=controller, listen_ip=ip,
                          port=7070, libvirt_uri=uri, domain_type="qemu", state_dir=sd, log_dir=sd / "log",
                          storage_roots=[str(base.parent)], tls_cert=tls.get("tls_cert"),
                          tls_key=tls.get("tls_key"), tls_ca=tls.get("tls_ca"))
        app = create_app(cfg, driver=LibvirtDriver(uri, state_dir=sd, domain_type="qemu"), storage=StorageService(sd))
        r = web.AppRunner(app, access_log=None)
        await r.setup()
        ssl_context = server_context(tls["tls_cert"], tls["tls_key"]) if tls else None
        await web.TCPSite(r, ip, 7070, ssl_context=ssl_context).start()
        await asyncio.wait_for(wait_ready(app), 60)
        runners.append(r)
        hosts.append({"uuid": hu, "ip": ip, "token": cfg.token})
    await asyncio.to_thread(out.write_text, json.dumps(hosts))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for r in runners:
        await r.cleanup()


async def wait_file(path: Path) -> None:
    """Until the agents' child process has written its listing (bounded by the caller's timeout)."""
    while not await asyncio.to_thread(path.exists):  # noqa: ASYNC110 (another process writes it)
        await asyncio.sleep(0.2)


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)
        self.session = ""

    async def call(self, name: str, /, **params: Any) -> dict[str, Any]:
        async with self.http.post(f"{self.url}/v1/{name}", json=params,
                                  headers={"Authorization": f"OAuth {self.session}"},
                                  timeout=aiohttp.ClientTimeout(total=600)) as r:
            body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"{name}: {r.status} {body}")
        return body.get("inventory", body)


async def records(c: Client, work: Path) -> dict[str, str]:
    from zsutil.runner import run

    zone = await c.call("CreateZone", name="z")
    cl = await c.call("CreateCluster", name="c", zoneUuid=zone["uuid"], hypervisorType="KVM")
    l2 = await c.call("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
    await c.call("AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"], clusterUuid=cl["uuid"])
    l3 = await c.call("CreateL3Network", name="l3", l2NetworkUuid=l2["uuid"])
    await c.call("AddIpRangeByNetworkCidr", l3NetworkUuid=l3["uuid"], name="r", networkCidr="10.64.0.0/16")
    ps = await c.call("AddLocalPrimaryStorage", name="ls", zoneUuid=zone["uuid"], url=str(work / "ps"))
    await c.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cl["uuid"])
    off = await c.call("CreateInstanceOffering", name="o", cpuNum=1, cpuSpeed=100, memorySize=64 * MiB)
    img = work / "img.qcow2"
    await run(["qemu-img", "create", "-f", "qcow2", str(img), "64M"], timeout=30)
    image = await c.call("AddImage", name="i", url=f"file://{img}", format="qcow2")
    return {"cluster": cl["uuid"], "l3": l3["uuid"], "offering": off["uuid"], "image": image["uuid"]}


async def create_all(c: Client, ids: dict[str, str], n: int, conc: int) -> tuple[list[float], float, list[str]]:
    """Create ``n`` VMs, ``conc`` calls in flight; returns latencies, wall time and the failures."""
    lat: list[float] = []
    failed: list[str] = []
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            try:
                await c.call("CreateVmInstance", name=f"vm{i}", instanceOfferingUuid=ids["offering"],
                             imageUuid=ids["image"], l3NetworkUuids=[ids["l3"]])
            except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
                failed.append(f"vm{i}: {e}")
                return
            lat.append(time.perf_counter() - t)

    async def progress() -> None:
        while True:
            await asyncio.sleep(10)
            done = len(lat)
            print(f"  {time.perf_counter() - t0:6.1f} s: {done} created ({done / (time.perf_counter() - t0):.1f}/s), "
                  f"{len(failed)} failed", flush=True)

    t0 = time.perf_counter()
    ticker = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        ticker.cancel()
    return lat, time.perf_counter() - t0, failed


async def main(args: argparse.Namespace) -> None:
    from controller.app import create_app
    from controller.compute.hosts import add_connected_host
    from controller.config import ControllerConfig

    work = Path(tempfile.mkdtemp(prefix="zstack-bench-vms-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app = create_app(ControllerConfig(db_path=str(work / "c.db"), log_dir=str(work / "log"), port=port,
                                      listen_host="127.0.0.1", agent_tls_port=0,
                                      image_import_dirs=[str(work)], allow_host_local_images=True))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    from controller.api.http import CORE

    core = app[CORE]
    tls_dir = str(core.services["tls"].dir) if args.tls else ""
    events_url = f"https://127.0.0.1:{await core.services['tls'].events_listener()}" if args.tls else url
    print(f"agents: {'HTTPS (certificates from the controller CA), events over TLS' if args.tls else 'plain HTTP'}")
    procs = max(1, min(args.agent_procs, args.hosts))
    shares = [args.hosts // procs + (1 if i < args.hosts % procs else 0) for i in range(procs)]
    listings = [work / f"hosts-{i}.json" for i in range(procs)]
    children = [await asyncio.create_subprocess_exec(sys.executable, __file__, "--child", str(sum(shares[:i])),
                                                     str(shares[i]), str(listings[i]), events_url,
                                                     str(work / "agents"), tls_dir)
                for i in range(procs)]
    c = Client(url)
    try:
        t = time.perf_counter()
        for listing in listings:
            await wait_file(listing)
        hosts = [h for listing in listings for h in json.loads(listing.read_text())]
        print(f"{args.hosts} agents up in {time.perf_counter() - t:.1f} s")
        c.session = (await c.call("LogInByAccount", accountName="admin", password="password"))["uuid"]
        ids = await records(c, work)
        for h in hosts:
            await add_connected_host(core, name=h["ip"], cluster_uuid=ids["cluster"], ip=h["ip"], port=7070,
                                     token=h["token"], controller_url=events_url, uuid=h["uuid"], tls=args.tls)
        for h in hosts:   # warm each host's image cache (shared FS: one at a time)
            await c.call("CreateVmInstance", name="warm", instanceOfferingUuid=ids["offering"], imageUuid=ids["image"],
                         l3NetworkUuids=[ids["l3"]], hostUuid=h["uuid"])
        lat, wall, failed = await create_all(c, ids, args.vms, args.concurrency)
        lat.sort()
        running = (await c.call("QueryVmInstance", count=True,
                                conditions=[{"name": "state", "op": "=", "value": "Running"},
                                            {"name": "name", "op": "!=", "value": "warm"}]))["total"]
        print(f"machine: {platform.node()} {os.cpu_count()} cpus, python {platform.python_version()}")
        print(f"{args.vms} VMs over {args.hosts} hosts, concurrency {args.concurrency}: {wall:.1f} s, "
              f"{args.vms / wall:.1f} VMs/s")
        print(f"Running (QueryVmInstance count): {running} of {args.vms}; failed creates: {len(failed)}"
              + (f" (first: {failed[0]})" if failed else ""))
        print(f"create latency p50 {statistics.median(lat) * 1000:.0f} ms, "
              f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.0f} ms")
        print(f"RSS controller {rss_mib(os.getpid()):.0f} MiB, agents ({args.hosts} in {procs} processes) "
              f"{sum(rss_mib(ch.pid) for ch in children):.0f} MiB "
              f"({sum(rss_mib(ch.pid) for ch in children) / args.hosts:.1f} MiB per agent)")
    finally:
        await c.http.close()
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            await child.wait()
        await runner.cleanup()
        await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        asyncio.run(run_agents(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5], Path(sys.argv[6]),
                               sys.argv[7]))
        sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, default=10000)
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--agent-procs", type=int, default=2, help="processes the simulated agents are spread over")
    p.add_argument("--tls", action="store_true", help="agents serve HTTPS with certificates from the controller's CA")
    asyncio.run(main(p.parse_args()))
