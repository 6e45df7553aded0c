"""Security groups enforced by the agent's applier (``kvmagent.secgroup``) in a real kernel (root): guests are
namespaces whose veths ("taps") sit on one bridge in a private host namespace (tests/functional/flatnet_env.py).

Traffic is real: sockets are opened inside the guests' namespaces (setns in a worker thread), ICMP with
busybox ping. Each check is made both ways (allowed and denied), so a rule set that filters nothing, or
everything, fails.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from flatnet_env import Env, Vm, flatnet_env_fixture  # noqa: F401  (fixture)
from pyroute2.netns import popns, pushns

from flatnet.model import UserdataSpec
from flatnet.secgroup import SgNic, SgRule
from kvmagent.secgroup import SecurityGroupService
from zsutil.runner import run

T = TypeVar("T")
A_IP, B_IP, C_IP = "10.77.0.11", "10.77.0.12", "10.77.0.13"


def in_ns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` with this thread in network namespace ``ns`` (sockets it creates stay there)."""
    pushns(ns)
    try:
        return fn()
    finally:
        popns()


class Servers:
    """TCP echo servers and UDP echo sockets inside one guest, served by daemon threads."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self.socks: list[socket.socket] = []

    def tcp(self, port: int) -> None:
        def make() -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(16)
            return s
        s = in_ns(self.vm.netns, make)
        self.socks.append(s)
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c: socket.socket) -> None:
        with c:
            while True:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                c.sendall(data)

    def udp(self, port: int) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", port))
            return s
        s = in_ns(self.vm.netns, make)
        self.socks.append(s)

        def loop() -> None:
            while True:
                try:
                    data, peer = s.recvfrom(2048)
                    s.sendto(data, peer)
                except OSError:
                    return
        threading.Thread(target=loop, daemon=True).start()

    def close(self) -> None:
        for s in self.socks:
            s.close()


async def tcp_ok(vm: Vm, ip: str, port: int, timeout: float = 1.0) -> bool:
    def work() -> bool:
        try:
            s = in_ns(vm.netns, lambda: socket.create_connection((ip, port), timeout=timeout))
        except OSError:
            return False
        with s:
            try:
                s.sendall(b"ping")
                return s.recv(16) == b"ping"
            except OSError:
                return False
    return await asyncio.to_thread(work)


async def udp_ok(vm: Vm, ip: str, port: int, timeout: float = 1.0) -> bool:
    def work() -> bool:
        s = in_ns(vm.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        with s:
            s.settimeout(timeout)
            s.sendto(b"hello", (ip, port))
            try:
                return s.recv(16) == b"hello"
            except OSError:
                return False
    return await asyncio.to_thread(work)


async def ping_ok(vm: Vm, ip: str) -> bool:
    res = await run(["ip", "netns", "exec", vm.netns, "busybox", "ping", "-c", "1", "-W", "1", ip], timeout=10,
                    ok_codes=(0, 1))
    return res.rc == 0


@contextmanager
def servers(vm: Vm) -> Iterator[Servers]:
    s = Servers(vm)
    try:
        yield s
    finally:
        s.close()


async def guests(env: Env) -> tuple[Vm, Vm, Vm]:
    a, b, c = await env.add_vm("a"), await env.add_vm("b"), await env.add_vm("c")
    for vm, ip in ((a, A_IP), (b, B_IP), (c, C_IP)):
        await env.set_addr(vm, ip)
    return a, b, c


def nic(vm: Vm, ip: str, *rules: SgRule, **kw: Any) -> SgNic:
    return SgNic(tap=vm.tap, mac=vm.mac, ips=(ip,), rules=tuple(rules), uuid=f"nic-{vm.name}", **kw)


def service(env: Env) -> SecurityGroupService:
    return SecurityGroupService(env.tmp / "sg", host_netns=env.host, interval=3600)


async def test_rules_allow_and_deny_by_protocol_port_range_and_cidr(env: Env) -> None:
    a, b, c = await guests(env)
    sg = service(env)
    with servers(b) as srv, servers(a) as srv_a:
        for p in (8005, 8020):
            srv.tcp(p)
        for p in (9000, 9001):
            srv.udp(p)
        srv_a.tcp(7000)
        # before any rule set: everything open
        assert await tcp_ok(a, B_IP, 8020) and await udp_ok(a, B_IP, 9001) and await ping_ok(a, B_IP)
        await sg.apply(1, [nic(b, B_IP,
                               SgRule("Ingress", "TCP", 8000, 8010, (f"{A_IP}/32",)),
                               SgRule("Ingress", "UDP", 9000, 9000, ("0.0.0.0/0",)),
                               SgRule("Ingress", "ICMP", 8, 0, (f"{C_IP}/32",)))])
        assert await tcp_ok(a, B_IP, 8005)  # in the port range, from the CIDR
        assert not await tcp_ok(a, B_IP, 8020)  # outside the range
        assert not await tcp_ok(c, B_IP, 8005)  # outside the CIDR
        assert await udp_ok(a, B_IP, 9000) and await udp_ok(c, B_IP, 9000)
        assert not await udp_ok(a, B_IP, 9001)
        assert await ping_ok(c, B_IP) and not await ping_ok(a, B_IP)  # ICMP echo only from C
        # egress default accept; the replies of B's own connections come back although A is not allowed in
        assert await tcp_ok(b, A_IP, 7000) and await ping_ok(b, A_IP)
        # A and C are in no group: traffic between them is not filtered
        assert await ping_ok(a, C_IP)
        # an egress whitelist: B may only reach A's port 7000 (and its replies still pass)
        await sg.apply(2, [nic(b, B_IP, SgRule("Egress", "TCP", 7000, 7000, (f"{A_IP}/32",)))])
        assert await tcp_ok(b, A_IP, 7000)
        assert not await ping_ok(b, A_IP) and not await ping_ok(b, C_IP)
        assert not await tcp_ok(a, B_IP, 8005)  # no ingress rule left: default deny
        # protocol ALL from a CIDR, and the ingress default "accept" for a NIC without ingress rules
        await sg.apply(3, [nic(b, B_IP, SgRule("Ingress", "ALL", -1, -1, (f"{C_IP}/32",))),
                           nic(a, A_IP, ingress_default="accept")])
        assert await tcp_ok(c, B_IP, 8020) and await udp_ok(c, B_IP, 9001) and await ping_ok(c, B_IP)
        assert not await tcp_ok(a, B_IP, 8005)
        assert await tcp_ok(c, A_IP, 7000)


async def test_a_rule_change_keeps_the_established_flows_it_still_allows(env: Env) -> None:
    a, b, _ = await guests(env)
    sg = service(env)
    allow_8005 = SgRule("Ingress", "TCP", 8005, 8005, (f"{A_IP}/32",))
    with servers(b) as srv:
        srv.tcp(8005)
        srv.tcp(8006)
        await sg.apply(1, [nic(b, B_IP, allow_8005)])
        conn = await asyncio.to_thread(in_ns, a.netns, lambda: socket.create_connection((B_IP, 8005), timeout=2))
        with conn:
            conn.settimeout(1.5)

            async def talk() -> bool:
                def work() -> bool:
                    try:
                        conn.sendall(b"x" * 100)
                        got = b""
                        while len(got) < 100:
                            chunk = conn.recv(100 - len(got))
                            if not chunk:
                                return False
                            got += chunk
                        return True
                    except OSError:
                        return False
                return await asyncio.to_thread(work)

            assert await talk()
            # a new generation that still allows the flow (and adds another rule): the flow goes on
            await sg.apply(2, [nic(b, B_IP, SgRule("Ingress", "TCP", 8006, 8006, (f"{A_IP}/32",)), allow_8005)])
            assert await talk()
            assert await tcp_ok(a, B_IP, 8006)
            # a generation without the rule: the established flow stops at once (1.0 kept it open)
            await sg.apply(3, [nic(b, B_IP, SgRule("Ingress", "TCP", 8006, 8006, (f"{A_IP}/32",)))])
            assert not await talk()
            assert await tcp_ok(a, B_IP, 8006)


async def test_flat_dhcp_and_metadata_keep_working_in_a_group(env: Env) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    a = await env.add_vm("a")
    await svc.apply_dhcp([l3], [env.nic(a, l3, A_IP)], rebuild=False)
    await svc.apply_userdata(UserdataSpec(vm_uuid="vm-a", l3_uuid=l3.uuid, vm_ip=A_IP, userdata="#cloud-config\n"))
    sg = service(env)
    # default-deny ingress and an egress whitelist that names neither the DHCP server nor the metadata address
    await sg.apply(1, [nic(a, A_IP, SgRule("Egress", "TCP", 443, 443, ("0.0.0.0/0",)),
                           host_service_ips=(l3.dhcp_ip,))])
    lease = await env.udhcpc(a)
    assert lease is not None and lease["ip"] == A_IP
    await env.configure(a, lease)
    assert await env.http(a, "http://169.254.169.254/latest/meta-data/instance-id") == (200, "vm-a")
    assert await env.http(a, f"http://{l3.dhcp_ip}/latest/meta-data/instance-id") == (200, "vm-a")
    # the egress whitelist does hold for anything else: a neighbour answers only once the whitelist is gone
    c = await env.add_vm("c")
    await env.set_addr(c, C_IP)
    assert not await ping_ok(a, C_IP)
    await sg.apply(2, [nic(a, A_IP, host_service_ips=(l3.dhcp_ip,))])
    assert await ping_ok(a, C_IP)
    assert await env.udhcpc(a) is not None


async def test_reconcile_restores_a_rule_set_flushed_by_hand_and_removes_stale_nics(env: Env) -> None:
    a, b, c = await guests(env)
    sg = service(env)
    with servers(b) as srv, servers(c) as srv_c:
        srv.tcp(8005)
        srv_c.tcp(8005)
        await sg.apply(7, [nic(b, B_IP), nic(c, C_IP)])
        assert not await tcp_ok(a, B_IP, 8005) and not await tcp_ok(a, C_IP, 8005)
        assert await sg.in_sync() and not await sg.reconcile()
        await env.host_cmd("nft", "delete", "table", "inet", "zstack_sg")  # by hand
        assert await tcp_ok(a, B_IP, 8005)
        assert not await sg.in_sync()
        assert await sg.reconcile()
        assert not await tcp_ok(a, B_IP, 8005)
        await env.host_cmd("nft", "flush", "chain", "inet", "zstack_sg", "in_" + b.tap.replace(".", "_"))
        assert not await sg.in_sync() and await sg.reconcile()
        assert not await tcp_ok(a, B_IP, 8005)
        # agent restart: a new service on the same state dir puts the kept set back by itself
        await env.host_cmd("nft", "delete", "table", "bridge", "zstack_sg")
        restarted = service(env)
        await restarted.start()
        try:
            assert restarted.generation == 7 and await restarted.in_sync()
            assert not await tcp_ok(a, B_IP, 8005)
            # an older generation (a late retry) changes nothing; the whole new set drops C's stale rules
            applied, _ = await restarted.apply(6, [])
            assert not applied and not await tcp_ok(a, C_IP, 8005)
            await restarted.apply(8, [nic(b, B_IP)])
            assert await tcp_ok(a, C_IP, 8005) and not await tcp_ok(a, B_IP, 8005)
            res = await env.host_cmd("nft", "list", "table", "inet", "zstack_sg")
            assert c.tap.replace(".", "_") not in res.stdout and "generation 8" in res.stdout
        finally:
            await restarted.stop()
