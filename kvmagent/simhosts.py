"""Many simulated KVM hosts in ONE process, for scale tests and benchmarks.

    python -m kvmagent.simhosts --count 100 --base-port 17000 --controller URL --out hosts.json \
        [--state-dir DIR] [--cpus 8] [--memory-gib 16]

Each host is a full agent (the real server, handlers and driver) over libvirt's test driver with its own
``node.xml`` (so its own private hypervisor state), host uuid, token, port and state dir. The JSON file::

    {"hosts": [{"uuid": ..., "ip": "127.0.0.1", "port": 17000, "token": ..., "stateDir": ...}, ...]}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from kvmagent.config import AgentConfig
from kvmagent.contract.tls import server_context
from kvmagent.driver.libvirt_driver import LibvirtDriver
from kvmagent.driver.testnode import write_node_xml
from kvmagent.server import create_app, wait_ready

log = logging.getLogger(__name__)


@dataclass
class SimHost:
    config: AgentConfig
    runner: web.AppRunner
    port: int

    def describe(self) -> dict[str, Any]:
        return {"uuid": self.config.host_uuid, "ip": "127.0.0.1", "port": self.port,
                "token": self.config.token, "stateDir": str(self.config.state_dir)}


async def start_host(state_dir: Path, *, port: int, controller_url: str | None, cpus: int = 8,
                     memory_bytes: int = 16 << 30, ready_timeout: float = 30.0,
                     tls: tuple[Path, Path, Path] | None = None) -> SimHost:
    """One simulated host, ready (reconciled) when this returns. ``port`` 0 picks a free port. Plain HTTP
    unless ``tls`` = (certificate, key, CA certificate) files: then it serves HTTPS like a deployed agent."""
    host_uuid = uuid.uuid4().hex
    sd = state_dir / host_uuid
    uri = await asyncio.to_thread(write_node_xml, sd / "node.xml", cpus=cpus, memory_bytes=memory_bytes)
    config = AgentConfig(host_uuid=host_uuid, token=secrets.token_hex(16), controller_url=controller_url,
                         listen_ip="127.0.0.1", port=port, libvirt_uri=uri, domain_type="qemu",
                         state_dir=sd, log_dir=sd / "log", tls_cert=tls[0] if tls else None,
                         tls_key=tls[1] if tls else None, tls_ca=tls[2] if tls else None)
    app = create_app(config, driver=LibvirtDriver(uri, state_dir=sd, domain_type="qemu"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        ssl_context = server_context(tls[0], tls[1]) if tls else None
        site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
        await site.start()
        async with asyncio.timeout(ready_timeout):
            await wait_ready(app)
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return SimHost(config, runner, int(bound))


async def start_hosts(count: int, state_dir: Path, *, base_port: int, controller_url: str | None,
                      cpus: int = 8, memory_bytes: int = 16 << 30) -> list[SimHost]:
    """``count`` hosts on ``base_port``, ``base_port+1``, ... (all on 0 = free ports when base_port is 0).
    If one fails to start, the ones already started are stopped."""
    hosts: list[SimHost] = []
    try:
        for i in range(count):
            port = base_port + i if base_port else 0
            hosts.append(await start_host(state_dir, port=port, controller_url=controller_url, cpus=cpus,
                                          memory_bytes=memory_bytes))
    except BaseException:
        await stop_hosts(hosts)
        raise
    return hosts


async def stop_hosts(hosts: list[SimHost]) -> None:
    for h in hosts:
        await h.runner.cleanup()


async def _run(args: argparse.Namespace) -> None:
    state_dir = Path(args.state_dir or tempfile.mkdtemp(prefix="zstack-simhosts-"))
    hosts = await start_hosts(args.count, state_dir, base_port=args.base_port, controller_url=args.controller,
                              cpus=args.cpus, memory_bytes=args.memory_gib << 30)
    listing = json.dumps({"hosts": [h.describe() for h in hosts]}, indent=1)
    await asyncio.to_thread(Path(args.out).write_text, listing)
    log.info("%d simulated hosts up; listed in %s", len(hosts), args.out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await stop_hosts(hosts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kvmagent.simhosts", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--base-port", type=int, default=17000, help="first port; 0 = free ports")
    p.add_argument("--controller", default=None, help="controller URL for event reports")
    p.add_argument("--out", required=True, help="where to write the hosts JSON")
    p.add_argument("--state-dir", default=None, help="parent of the per-host state dirs (default: temp dir)")
    p.add_argument("--cpus", type=int, default=8)
    p.add_argument("--memory-gib", type=int, default=16)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
