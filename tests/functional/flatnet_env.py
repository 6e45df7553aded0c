"""Test environment for flatnet functional tests (root): a private "host" namespace with bridge ``br0``
whose uplink ``eth0`` is a veth into a "phys" namespace, and "VM" namespaces wired to the bridge through
veth pairs (the host end plays the tap ``vnic...``). Everything is removed by the fixture finalizer."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
from pyroute2 import IPRoute, netns

from flatnet.model import L3Spec, NicSpec
from flatnet.names import l3_names
from flatnet.service import FlatNetService
from zsutil.runner import ProcessError, Result, run

T = TypeVar("T")

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
env | grep -E '^(ip|subnet|router|dns|domain|hostname|staticroutes|serverid)=' > "$LEASE_OUT"
"""


@dataclass
class Vm:
    name: str
    netns: str
    tap: str
    mac: str


@dataclass
class Env:
    tmp: Path
    host: str
    phys: str
    sfx: str
    vms: list[Vm] = field(default_factory=list)
    services: list[FlatNetService] = field(default_factory=list)
    l3_uuids: list[str] = field(default_factory=list)

    def service(self) -> FlatNetService:
        svc = FlatNetService(self.tmp / "state", host_netns=self.host, log_dhcp=os.environ.get("FN_LOGDHCP") == "1")
        self.services.append(svc)
        return svc

    def l3(self, *, cidr_prefix: str = "10.77.0", anti_spoofing: bool = True, **kw: object) -> L3Spec:
        u = uuid.uuid4().hex
        self.l3_uuids.append(u)
        args: dict[str, object] = dict(uuid=u, bridge="br0", uplink="eth0", dhcp_ip=f"{cidr_prefix}.2",
                                       netmask="255.255.255.0", gateway=f"{cidr_prefix}.1", dns=("10.77.9.9",),
                                       dns_domain="zstack.test", anti_spoofing=anti_spoofing)
        args.update(kw)
        return L3Spec.model_validate(args)

    async def nl(self, ns: str | None, fn: Callable[[IPRoute], T]) -> T:
        """Run ``fn(IPRoute(netns=ns))`` in a worker thread (pyroute2's sync API needs a loop-free thread)."""
        def work() -> T:
            with IPRoute(netns=ns) as ipr:
                return fn(ipr)
        return await asyncio.to_thread(work)

    async def add_vm(self, name: str) -> Vm:
        return await asyncio.to_thread(self._add_vm, name)

    def _add_vm(self, name: str) -> Vm:
        i = len(self.vms) + 1
        vm = Vm(name=name, netns=f"fnv{self.sfx}{i}", tap=f"vnic{self.sfx}.{i}",
                mac=f"52:54:00:{int(self.sfx[:2], 16):02x}:{int(self.sfx[2:4], 16):02x}:{i:02x}")
        netns.create(vm.netns)
        with IPRoute(netns=self.host) as h:
            h.link("add", ifname=vm.tap, kind="veth", peer={"ifname": "eth0", "net_ns_fd": vm.netns})
            h.link("set", index=h.link_lookup(ifname=vm.tap)[0], master=h.link_lookup(ifname="br0")[0],
                   state="up")
        with IPRoute(netns=vm.netns) as v:
            v.link("set", index=v.link_lookup(ifname="eth0")[0], address=vm.mac, state="up")
            v.link("set", index=v.link_lookup(ifname="lo")[0], state="up")
        self.vms.append(vm)
        return vm

    def nic(self, vm: Vm, l3: L3Spec, ip: str, **kw: object) -> NicSpec:
        args: dict[str, object] = dict(vm_uuid=f"vm-{vm.name}", l3_uuid=l3.uuid, mac=vm.mac, ip=ip,
                                       netmask=l3.netmask, gateway=l3.gateway, hostname=vm.name,
                                       default_l3=True, tap=vm.tap)
        args.update(kw)
        return NicSpec.model_validate(args)

    async def udhcpc(self, vm: Vm, *, tries: int = 3) -> dict[str, str] | None:
        """Run busybox udhcpc once in the VM namespace; the lease's variables, or None without a lease."""
        out = self.tmp / f"lease-{vm.name}-{secrets.token_hex(3)}"
        script = self.tmp / "udhcpc.sh"
        if not script.exists():  # written once: concurrent clients may be executing it
            tmp = self.tmp / f".udhcpc.{secrets.token_hex(3)}"
            tmp.write_text(UDHCPC_SCRIPT)
            tmp.chmod(0o755)
            os.replace(tmp, script)
        argv = ["ip", "netns", "exec", vm.netns, "env", f"LEASE_OUT={out}", "busybox", "udhcpc", "-i", "eth0",
                "-f", "-q", "-n", "-t", str(tries), "-T", "1", "-A", "1", "-O", "staticroutes",
                "-O", "hostname", "-O", "domain", "-s", str(script)]
        try:
            await run(argv, timeout=30)
        except ProcessError:
            return None
        if not out.exists():
            return None
        return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)

    async def configure(self, vm: Vm, lease: dict[str, str]) -> None:
        """Apply a udhcpc lease to the VM namespace as a guest's DHCP script would (address + option 121)."""
        await asyncio.to_thread(self._configure, vm, lease)

    def _configure(self, vm: Vm, lease: dict[str, str]) -> None:
        prefix = sum(bin(int(o)).count("1") for o in lease["subnet"].split("."))
        routes = lease.get("staticroutes", "").split()
        with IPRoute(netns=vm.netns) as v:
            idx = v.link_lookup(ifname="eth0")[0]
            v.flush_addr(index=idx)
            v.addr("add", index=idx, address=lease["ip"], prefixlen=prefix)
            for dst, gw in zip(routes[0::2], routes[1::2], strict=True):
                v.route("replace", dst=dst, gateway=gw, oif=idx)

    async def set_addr(self, vm: Vm, ip: str, *, mac: str | None = None) -> None:
        await asyncio.to_thread(self._set_addr, vm, ip, mac)

    def _set_addr(self, vm: Vm, ip: str, mac: str | None) -> None:
        with IPRoute(netns=vm.netns) as v:
            idx = v.link_lookup(ifname="eth0")[0]
            v.flush_addr(index=idx)
            v.addr("add", index=idx, address=ip, prefixlen=24)
            if mac:
                v.link("set", index=idx, address=mac)
            v.route("replace", dst="169.254.169.254/32", oif=idx, scope=253)

    async def http(self, vm: Vm, url: str, *, headers: tuple[str, ...] = (), timeout: int = 3) -> tuple[int, str]:
        """GET ``url`` with curl from inside the VM namespace; (status, body), status 0 if unreachable."""
        argv = ["ip", "netns", "exec", vm.netns, "curl", "-s", "-m", str(timeout), "-o", "-",
                "-w", "\n%{http_code}"]
        for h in headers:
            argv += ["-H", h]
        res: Result = await run([*argv, url], timeout=timeout + 5, ok_codes=range(0, 256))
        body, _, code = res.stdout.rpartition("\n")
        return int(code or 0), body

    async def in_vm(self, vm: Vm, *argv: str, timeout: float = 30, ok: tuple[int, ...] = (0,)) -> Result:
        return await run(["ip", "netns", "exec", vm.netns, *argv], timeout=timeout, ok_codes=ok)

    async def host_cmd(self, *argv: str) -> Result:
        return await run(["ip", "netns", "exec", self.host, *argv], timeout=30)


def dnsmasq_pids() -> list[int]:
    """Every dnsmasq started from a flatnet configuration (``--conf-file=.../flatnet/...``)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            state = (p / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"dnsmasq") and state != "Z" and any(b"/flatnet/" in c for c in cmd):
            pids.append(int(p.name))
    return pids


def _make_env(tmp: Path) -> Env:
    sfx = secrets.token_hex(3)[:5]
    env = Env(tmp=tmp, host=f"fnh{sfx}", phys=f"fnp{sfx}", sfx=sfx)
    netns.create(env.host)
    netns.create(env.phys)
    with IPRoute(netns=env.host) as h:
        h.link("add", ifname="br0", kind="bridge")
        br = h.link_lookup(ifname="br0")[0]
        h.link("set", index=br, state="up")
        h.link("add", ifname="eth0", kind="veth", peer={"ifname": "up0", "net_ns_fd": env.phys})
        h.link("set", index=h.link_lookup(ifname="eth0")[0], master=br, state="up")
        h.link("set", index=h.link_lookup(ifname="lo")[0], state="up")
    with IPRoute(netns=env.phys) as p:
        p.link("set", index=p.link_lookup(ifname="up0")[0], state="up")
    return env


async def _teardown(env: Env) -> None:
    for svc in env.services:
        await svc.stop()
    for d in (env.tmp / "state").glob("flatnet/l3/*"):
        pid_file = d / "dnsmasq.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    names = [vm.netns for vm in env.vms] + [env.host, env.phys] + [l3_names(u).netns for u in env.l3_uuids]
    for n in names:
        if n in netns.listnetns():
            netns.remove(n)
    await asyncio.sleep(0)


@pytest.fixture(name="env")
async def flatnet_env_fixture(tmp_path: Path) -> AsyncIterator[Env]:
    if not shutil.which("busybox"):
        pytest.fail("busybox is required (apt-get install busybox) for the udhcpc DHCP client")
    e = await asyncio.to_thread(_make_env, tmp_path)
    try:
        yield e
    finally:
        await _teardown(e)
