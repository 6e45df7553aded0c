#!/usr/bin/env python3
"""API throughput and latency of the controller, through its real HTTP server.

Prints calls/s and p50/p99 latency for simple creates (CreateZone) and for queries over 100,000 VM rows.
Targets (issue 2): >= 1,000 creates/s and query p50 <= 20 ms on the 2-core machine.

    /opt/zstack-py/venv/bin/python scripts/bench/api_bench.py [--creates 5000] [--rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe

from controller.app import create_app
from controller.config import ControllerConfig


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


async def fill_vms(db_path: str, rows: int) -> None:
    import sqlite3

    con = sqlite3.connect(db_path)
    now = "2026-01-01T00:00:00.000Z"
    con.execute("INSERT INTO Zone (uuid, name, createDate, lastOpDate) VALUES ('z'||hex(randomblob(15)), 'bz', ?, ?)",
                (now, now))
    vms = [(f"{i:032x}", f"vm-{i}", ("Running", "Stopped", "Starting")[i % 3], 1 << 30, 1, 1000, i + 1, now, now)
           for i in range(rows)]
    con.executemany("INSERT INTO VmInstance (uuid, name, state, memorySize, cpuNum, cpuSpeed, internalId, "
                    "createDate, lastOpDate) VALUES (?,?,?,?,?,?,?,?,?)", vms)
    nics = [(f"{i:031x}n", f"{i:032x}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
             f"fa:00:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}",
             f"vnic{i + 1}.0", 0, now, now) for i in range(rows)]
    con.executemany("INSERT INTO VmNic (uuid, vmInstanceUuid, ip, mac, internalName, deviceId, createDate, "
                    "lastOpDate) VALUES (?,?,?,?,?,?,?,?)", nics)
    con.commit()
    con.close()


async def timed(session: aiohttp.ClientSession, url: str, body: dict, lat: list[float]) -> None:
    t0 = time.perf_counter()
    async with session.post(url, json=body) as r:
        await r.read()
        assert r.status == 200, (r.status, await r.text())
    lat.append(time.perf_counter() - t0)


async def run(creates: int, rows: int, concurrency: int) -> None:
    tmp = tempfile.mkdtemp(prefix="zs-bench-")
    cfg = ControllerConfig(db_path=f"{tmp}/c.db", log_dir=tmp)
    runner = web.AppRunner(create_app(cfg), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}/v1"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async with s.post(f"{base}/LogInByAccount", json={"accountName": "admin", "password": "password"}) as r:
            sess = (await r.json())["inventory"]["uuid"]
        s.headers["Authorization"] = f"OAuth {sess}"
        lat: list[float] = []
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await timed(s, f"{base}/CreateZone", {"name": f"zone-{i}"}, lat)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(creates)))
        dt = time.perf_counter() - t0
        print(f"CreateZone x{creates} (concurrency {concurrency}): {creates / dt:,.0f} calls/s, "
              f"p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms")

        await fill_vms(cfg.db_path, rows)
        queries = {
            "uuid=": [{"name": "uuid", "op": "=", "value": f"{77777:032x}"}],
            "name=": [{"name": "name", "op": "=", "value": "vm-4242"}],
            "vmNics.ip=": [{"name": "vmNics.ip", "op": "=", "value": "10.1.2.3"}],
            "state=Running limit 20": [{"name": "state", "op": "=", "value": "Running"}],
        }
        for label, conds in queries.items():
            qlat: list[float] = []
            t0 = time.perf_counter()
            for _ in range(200):
                await timed(s, f"{base}/QueryVmInstance", {"conditions": conds, "limit": 20}, qlat)
            dt = time.perf_counter() - t0
            print(f"QueryVmInstance {label:<24} over {rows:,} rows: {200 / dt:,.0f} q/s, "
                  f"p50 {pct(qlat, .5):.1f} ms, p99 {pct(qlat, .99):.1f} ms")
        clat: list[float] = []
        for _ in range(20):
            await timed(s, f"{base}/QueryVmInstance", {"conditions": [], "count": True}, clat)
        print(f"QueryVmInstance count=true over {rows:,} rows: p50 {pct(clat, .5):.1f} ms")
    await runner.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1] if __doc__ else None)
    p.add_argument("--creates", type=int, default=5000)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=32)
    a = p.parse_args()
    print(f"machine: {describe()}")
    asyncio.run(run(a.creates, a.rows, a.concurrency))


if __name__ == "__main__":
    main()
