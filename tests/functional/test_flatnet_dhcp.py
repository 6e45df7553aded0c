"""flatnet DHCP with real dnsmasq in real namespaces and busybox udhcpc as the guest's DHCP client."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flatnet_env import Env, Vm, dnsmasq_pids, flatnet_env_fixture  # noqa: F401  (fixture)
from pyroute2 import netns

from flatnet import dnsmasq
from flatnet.names import dhcp_mac, l3_names


async def _netns_list() -> set[str]:
    return set(await asyncio.to_thread(netns.listnetns))


async def test_vm_gets_exactly_its_ip_hostname_and_routes(env: Env) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    vm1, vm2 = await env.add_vm("alpha"), await env.add_vm("beta")
    await svc.apply_dhcp([l3], [env.nic(vm1, l3, "10.77.0.11"),
                                env.nic(vm2, l3, "10.77.0.12", default_l3=False)], rebuild=False)
    lease = await env.udhcpc(vm1)
    assert lease is not None
    assert lease["ip"] == "10.77.0.11" and lease["subnet"] == "255.255.255.0"
    assert lease["hostname"] == "alpha" and lease["domain"] == "zstack.test"
    assert lease["router"] == "10.77.0.1" and lease["dns"].split() == ["10.77.9.9"]
    assert lease["staticroutes"].split() == ["169.254.169.254/32", "10.77.0.2", "0.0.0.0/0", "10.77.0.1"]
    lease2 = await env.udhcpc(vm2)
    assert lease2 is not None and lease2["ip"] == "10.77.0.12"
    assert "router" not in lease2 and "dns" not in lease2  # non-default L3: blank router and DNS
    assert lease2["staticroutes"].split() == ["169.254.169.254/32", "10.77.0.2"]
    n = l3_names(l3.uuid)
    mac = await env.nl(n.netns, lambda ns: ns.get_links(ns.link_lookup(ifname=n.inner)[0])[0].get("address"))
    assert mac == dhcp_mac(l3.uuid)


async def test_nics_come_and_go(env: Env) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    vm1, vm2 = await env.add_vm("one"), await env.add_vm("two")
    await svc.apply_dhcp([l3], [env.nic(vm1, l3, "10.77.0.21")], rebuild=False)
    pid = dnsmasq.find_pid(svc._paths(l3.uuid))
    assert pid is not None
    assert (await env.udhcpc(vm2, tries=2)) is None  # not allocated: static only
    await svc.apply_dhcp([], [env.nic(vm2, l3, "10.77.0.22")], rebuild=False)
    assert dnsmasq.find_pid(svc._paths(l3.uuid)) == pid  # a new NIC needs no restart (inotify)
    lease = await env.udhcpc(vm2)
    assert lease is not None and lease["ip"] == "10.77.0.22"
    lease = await env.udhcpc(vm1)
    assert lease is not None and lease["ip"] == "10.77.0.21"
    await svc.release_dhcp([(l3.uuid, vm1.mac)])
    assert (await env.udhcpc(vm1, tries=2)) is None
    # the released address goes to another MAC at once (its lease was dropped with dhcp_release)
    await svc.apply_dhcp([], [env.nic(vm2, l3, "10.77.0.21")], rebuild=False)
    lease = await env.udhcpc(vm2)
    assert lease is not None and lease["ip"] == "10.77.0.21"


async def test_restart_reconciles_without_duplicates(env: Env) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    vm = await env.add_vm("gamma")
    nic = env.nic(vm, l3, "10.77.0.31")
    await svc.apply_dhcp([l3], [nic], rebuild=False)
    await svc.apply_dhcp([l3], [nic], rebuild=False)  # idempotent
    pid = dnsmasq.find_pid(svc._paths(l3.uuid))
    rules = (await env.host_cmd("ebtables-save")).stdout
    await svc.stop()  # the agent goes away; dnsmasq and namespaces stay
    before = dnsmasq_pids()
    svc2 = env.service()
    await svc2.start()
    assert dnsmasq.find_pid(svc2._paths(l3.uuid)) == pid
    assert dnsmasq_pids() == before
    outer = l3_names(l3.uuid).outer
    links = await env.nl(env.host, lambda h: [x.get("ifname") for x in h.get_links()])
    assert links.count(outer) == 1 and sum(1 for x in links if x.startswith("zfo")) == 1
    assert _rules((await env.host_cmd("ebtables-save")).stdout) == _rules(rules)
    lease = await env.udhcpc(vm)
    assert lease is not None and lease["ip"] == "10.77.0.31"
    await svc2.stop()
    # damage: dnsmasq killed, veth deleted -> a restart repairs both, still exactly one of each
    await dnsmasq.stop(svc2._paths(l3.uuid))
    await env.nl(env.host, lambda h: h.link("del", index=h.link_lookup(ifname=outer)[0]))
    svc3 = env.service()
    await svc3.start()
    assert dnsmasq.find_pid(svc3._paths(l3.uuid)) is not None
    assert len(dnsmasq_pids()) == len(before)
    lease = await env.udhcpc(vm)
    assert lease is not None and lease["ip"] == "10.77.0.31"


async def test_rebuild_removes_what_is_no_longer_desired(env: Env) -> None:
    svc = env.service()
    await svc.start()
    l3a, l3b = env.l3(), env.l3(cidr_prefix="10.78.0", dns=())
    vm = await env.add_vm("delta")
    await svc.apply_dhcp([l3a, l3b], [env.nic(vm, l3a, "10.77.0.41")], rebuild=False)
    assert {l3_names(l3a.uuid).netns, l3_names(l3b.uuid).netns} <= await _netns_list()
    await svc.apply_dhcp([l3b], [], rebuild=True)
    assert l3_names(l3a.uuid).netns not in await _netns_list()
    assert dnsmasq.find_pid(svc._paths(l3a.uuid)) is None
    save = (await env.host_cmd("ebtables-save")).stdout
    assert f"zsas-{vm.tap}" not in save and "10.77.0.2 " not in save and "zsup-eth0" in save
    await svc.apply_dhcp([], [], rebuild=True)
    assert "zsup-eth0" not in (await env.host_cmd("ebtables-save")).stdout
    assert l3_names(l3b.uuid).netns not in await _netns_list()
    assert svc.status().l3s == []


async def test_dhcp_and_dhcp_ip_stay_off_the_uplink(env: Env) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    vm = await env.add_vm("eps")
    await svc.apply_dhcp([l3], [env.nic(vm, l3, "10.77.0.51")], rebuild=False)
    # a client on the far side of the uplink, even with the VM's MAC, gets nothing from this host's dnsmasq
    def far_side(p):  # type: ignore[no-untyped-def]
        idx = p.link_lookup(ifname="up0")[0]
        p.link("set", index=idx, address=vm.mac)
        p.addr("add", index=idx, address="10.77.0.99", prefixlen=24)
    await env.nl(env.phys, far_side)
    far = Vm(name="far", netns=env.phys, tap="", mac=vm.mac)
    res = await env.in_vm(far, "busybox", "udhcpc", "-i", "up0", "-f", "-q", "-n", "-t", "2", "-T", "1",
                          "-s", "/bin/true", ok=(0, 1))
    assert res.rc == 1
    # ARP for the DHCP IP from across the uplink is not answered ...
    arp = await env.in_vm(far, "busybox", "arping", "-c", "2", "-w", "3", "-I", "up0", "10.77.0.2", ok=(0, 1))
    assert arp.rc == 1, arp.stdout
    # ... but it is from a VM on the host (the rule is specific to the uplink)
    lease = await env.udhcpc(vm)
    assert lease is not None
    await env.configure(vm, lease)
    ok = await env.in_vm(vm, "busybox", "arping", "-c", "1", "-w", "3", "-I", "eth0", "10.77.0.2", ok=(0, 1))
    assert ok.rc == 0, ok.stdout


async def test_other_dhcp_servers_on_the_l2_still_reach_guests_the_flat_dnsmasq_does_not_serve(
        env: Env, tmp_path: Path) -> None:
    """A DHCP server across the uplink (a virtual router of another L3 of this L2, on another host) serves the
    guests here that Flat does not serve; the flat guests still get only their host's answer."""
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    flat, other = await env.add_vm("flat"), await env.add_vm("other")
    await svc.apply_dhcp([l3], [env.nic(flat, l3, "10.77.0.61")], rebuild=False)

    def far_side(p):  # type: ignore[no-untyped-def]
        p.addr("add", index=p.link_lookup(ifname="up0")[0], address="10.88.0.1", prefixlen=24)
    await env.nl(env.phys, far_side)
    argv = ["ip", "netns", "exec", env.phys, "dnsmasq", "-k", "--conf-file=/dev/null", "--port=0",
            "--interface=up0", "--bind-interfaces", "--dhcp-range=10.88.0.50,10.88.0.60,255.255.255.0,1h",
            f"--dhcp-leasefile={tmp_path / 'far.leases'}", f"--pid-file={tmp_path / 'far.pid'}"]
    far = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.DEVNULL)
    try:
        lease = await env.udhcpc(other, tries=5)
        assert lease is not None and lease["serverid"] == "10.88.0.1", lease
        assert lease["ip"].startswith("10.88.0."), lease
        mine = await env.udhcpc(flat, tries=5)
        assert mine is not None and (mine["ip"], mine["serverid"]) == ("10.77.0.61", "10.77.0.2"), mine
        leases = (tmp_path / "far.leases").read_text()
        assert other.mac in leases and flat.mac not in leases, leases
    finally:
        far.kill()
        await far.wait()


def _rules(save: str) -> list[str]:
    return sorted(line for line in save.splitlines() if line.startswith(("-A", ":")))
