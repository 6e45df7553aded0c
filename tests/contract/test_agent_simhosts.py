"""Twenty simulated hosts in one process, each a full agent over its own test-driver state."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from agent_harness import start_body
from aiohttp import ClientSession

from kvmagent.simhosts import start_hosts, stop_hosts


async def test_twenty_hosts_start_a_vm_each(tmp_path: Path) -> None:
    hosts = await start_hosts(20, tmp_path, base_port=0, controller_url=None)
    try:
        assert len({h.port for h in hosts}) == 20 and len({h.config.token for h in hosts}) == 20
        async with ClientSession() as s:
            async def start(h):  # type: ignore[no-untyped-def]
                d = h.describe()
                vm = uuid.uuid4().hex
                url = f"http://{d['ip']}:{d['port']}"
                hdr = {"Authorization": f"Bearer {d['token']}"}
                async with s.post(f"{url}/vm/start", json=start_body(vm, "/sim/root.qcow2"), headers=hdr) as r:
                    assert r.status == 200, await r.text()
                async with s.post(f"{url}/vm/vmsync", json={}, headers=hdr) as r:
                    return vm, (await r.json())["states"]

            results = await asyncio.gather(*(start(h) for h in hosts))
        for vm, states in results:
            assert states == {vm: "Running"}  # each host sees only its own VM: private state per host
    finally:
        await stop_hosts(hosts)
