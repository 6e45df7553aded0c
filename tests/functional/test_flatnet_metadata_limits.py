"""One guest must not break its host's agent through the metadata server (issue 18, security 8).

The agent (test libvirt driver, real flatnet in private namespaces) runs in this process with the soft open-files
limit of a default service (1,024). One VM namespace opens 1,000 connections to the metadata server and holds
them; the agent's VM API still answers, another VM still gets its metadata, the agent's fds grow only by the
per-source limit, and the held connections are closed by the server's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from pathlib import Path

from flatnet_env import Env, flatnet_env_fixture  # noqa: F401  (fixture)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "contract"))

from agent_env import wait_for
from agent_harness import running_agent

from flatnet.connlimit import PER_SOURCE
from flatnet.model import UserdataSpec
from flatnet.service import FlatNetService

HOLDER = r"""
import resource, socket, sys, time
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
ip, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((ip, 80))
        held.append(s)
    except OSError:
        s.close()
print(len(held), flush=True)
sys.stdin.read()
"""


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_one_guest_flooding_the_metadata_server_leaves_the_agent_working(env: Env, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        await _flood(env, tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _flood(env: Env, tmp_path: Path) -> None:
    svc = FlatNetService(env.tmp / "state", host_netns=env.host)
    env.services.append(svc)
    l3 = env.l3()
    a, b = await env.add_vm("alpha"), await env.add_vm("beta")
    async with running_agent(tmp_path, flatnet=svc) as agent:
        await svc.apply_dhcp([l3], [env.nic(a, l3, "10.77.0.11"), env.nic(b, l3, "10.77.0.12")], rebuild=False)
        for vm, ip in ((a, "10.77.0.11"), (b, "10.77.0.12")):
            lease = await env.udhcpc(vm)
            assert lease is not None
            await env.configure(vm, lease)
            await svc.apply_userdata(UserdataSpec(vm_uuid=f"vm-{vm.name}", l3_uuid=l3.uuid, vm_ip=ip,
                                                  userdata="#cloud-config\n"))
        fds0 = _fds()
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", a.netns, sys.executable, "-c", HOLDER, "10.77.0.2", "1000",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
            print(f"\nguest alpha opened {int(line)} of 1000 connections; agent fds {fds0} → {_fds()}")
            # the agent's VM API answers, and another source is served
            status, reply = await agent.call("/vm/vmsync", {})
            assert status == 200, reply
            assert await env.http(b, "http://169.254.169.254/latest/meta-data/instance-id") == (200, "vm-beta")
            assert _fds() - fds0 <= PER_SOURCE + 24
            assert svc.metadata.limiter.refused >= 1000 - PER_SOURCE - 128  # (128: the kernel's accept backlog)
            # the held connections say nothing: the server closes them (keep-alive timeout), freeing alpha
            t0 = time.monotonic()
            await wait_for(lambda: svc.metadata.limiter.open == 0, timeout=15.0, what="idle connections closed")
            print(f"idle connections closed by the server after {time.monotonic() - t0:.1f} s")
            assert await env.http(a, "http://169.254.169.254/latest/meta-data/instance-id") == (200, "vm-alpha")
        finally:
            proc.kill()
            await proc.wait()
