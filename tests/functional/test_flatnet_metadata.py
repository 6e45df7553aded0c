"""Metadata/user data over HTTP from inside VM namespaces, anti-spoofing, and real cloud-init datasources."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml
from flatnet_env import Env, Vm, flatnet_env_fixture  # noqa: F401  (fixture)

from flatnet.model import L3Spec, UserdataSpec
from flatnet.service import FlatNetService
from zsutil.userdata import decode_minified

PROBE = Path(__file__).with_name("flatnet_cloudinit_probe.py")
SEED_FILE = Path("/work/shared/seed/zstack-1.0-release-notes.txt")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFlatnetTestKeyOnly0000000000000000000000 root@yyy"


def seed_userdata() -> str:
    for line in SEED_FILE.read_text().splitlines():
        if line.startswith("userdata::groups:"):
            return line[len("userdata::"):]
    raise AssertionError("the seed's userdata example was not found")


async def _setup(env: Env) -> tuple[FlatNetService, L3Spec, Vm, Vm]:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    a, b = await env.add_vm("alpha"), await env.add_vm("beta")
    await svc.apply_dhcp([l3], [env.nic(a, l3, "10.77.0.11"), env.nic(b, l3, "10.77.0.12")], rebuild=False)
    for vm in (a, b):
        lease = await env.udhcpc(vm)
        assert lease is not None
        await env.configure(vm, lease)
    await svc.apply_userdata(UserdataSpec(vm_uuid="vm-alpha", l3_uuid=l3.uuid, vm_ip="10.77.0.11",
                                          userdata=seed_userdata(), ssh_keys=(KEY,), hostname="alpha",
                                          root_password="s3cret"))
    return svc, l3, a, b


async def test_vm_reads_only_its_own_metadata(env: Env) -> None:
    svc, l3, a, b = await _setup(env)
    expected = decode_minified(seed_userdata())
    for base in ("http://169.254.169.254", "http://10.77.0.2"):
        assert await env.http(a, f"{base}/latest/user-data") == (200, expected)
        assert await env.http(a, f"{base}/latest/meta-data/instance-id") == (200, "vm-alpha")
        assert await env.http(a, f"{base}/latest/instance-id") == (200, "vm-alpha")
        assert await env.http(a, f"{base}/2009-04-04/meta-data/public-keys/0/openssh-key") == (200, KEY + "\n")
        status, index = await env.http(a, f"{base}/latest/meta-data/")
        assert status == 200 and "public-keys/" in index.split("\n") and "local-ipv4" in index
        assert await env.http(b, f"{base}/latest/user-data") == (404, "not found\n")  # unknown caller
        assert (await env.http(b, f"{base}/latest/meta-data/instance-id"))[0] == 404
    assert await env.http(a, "http://10.77.0.2:8080/", headers=("DomU_Request: send_my_password",)) \
        == (200, "s3cret")
    # updates take effect on the next fetch
    await svc.apply_userdata(UserdataSpec(vm_uuid="vm-alpha", l3_uuid=l3.uuid, vm_ip="10.77.0.11",
                                          userdata="#cloud-config\nhostname: changed\n"))
    assert await env.http(a, "http://169.254.169.254/latest/user-data") == (200, "#cloud-config\nhostname: changed\n")
    await svc.release_userdata("vm-alpha")
    assert (await env.http(a, "http://169.254.169.254/latest/user-data"))[0] == 404


async def test_spoofed_ip_and_mac_get_nothing(env: Env) -> None:
    _svc, _l3, a, b = await _setup(env)
    await env.set_addr(b, "10.77.0.11")  # beta takes alpha's IP
    assert (await env.http(b, "http://169.254.169.254/latest/user-data", timeout=2))[0] == 0
    await env.set_addr(b, "10.77.0.11", mac=a.mac)  # ... and alpha's MAC
    assert (await env.http(b, "http://169.254.169.254/latest/user-data", timeout=2))[0] == 0
    assert await env.udhcpc(b, tries=2) is None  # nor alpha's lease
    assert (await env.http(a, "http://169.254.169.254/latest/meta-data/instance-id")) == (200, "vm-alpha")


async def _fdb_ports(env: Env, mac: str) -> set[str]:
    """The bridge ports the host's br0 has learned ``mac`` on."""
    out = (await env.host_cmd("bridge", "fdb", "show", "br", "br0")).stdout
    return {line.split()[2] for line in out.splitlines() if line.startswith(mac + " ") and " dev " in line}


async def test_spoofed_mac_is_never_learned_by_the_bridge(env: Env) -> None:
    """Frames with another VM's MAC are dropped before the bridge learns their source (ebtables nat
    PREROUTING, not only filter FORWARD): otherwise the bridge would send that VM's traffic to the spoofer."""
    _svc, _l3, a, b = await _setup(env)
    await env.in_vm(a, "busybox", "ping", "-c", "1", "-W", "1", "10.77.0.2", ok=(0, 1))
    assert await _fdb_ports(env, a.mac) == {a.tap}
    await env.set_addr(b, "10.77.0.11", mac=a.mac)
    await env.in_vm(b, "busybox", "ping", "-c", "3", "-i", "0.2", "-W", "1", "10.77.0.2", ok=(0, 1))
    await env.in_vm(b, "busybox", "arping", "-c", "2", "-w", "1", "-I", "eth0", "10.77.0.2", ok=(0, 1, 2))
    assert b.tap not in await _fdb_ports(env, a.mac)


async def test_rogue_dhcp_server_in_a_vm_reaches_nobody(env: Env) -> None:
    _svc, _l3, a, b = await _setup(env)
    c = await env.add_vm("gamma")  # not allocated by the real server: only the rogue would answer
    rogue = [ "dnsmasq", "--conf-file=/dev/null", "--port=0", "--no-daemon", "--interface=eth0",
             "--bind-interfaces", "--dhcp-range=10.77.0.100,10.77.0.150,1h",
             f"--dhcp-leasefile={env.tmp}/rogue.leases"]

    proc = await asyncio.create_subprocess_exec("ip", "netns", "exec", b.netns, *rogue)
    try:
        await asyncio.sleep(0.5)
        assert await env.udhcpc(c, tries=3) is None
        lease = await env.udhcpc(a)
        assert lease is not None and lease["ip"] == "10.77.0.11" and lease["serverid"] == "10.77.0.2"
    finally:
        proc.kill()
        await proc.wait()


async def _dhclient_lease(env: Env, vm: Vm) -> Path:
    d = env.tmp / f"dhclient-{vm.name}"
    d.mkdir()
    lf, pf = d / "dhclient.eth0.leases", d / "dhclient.pid"
    await env.in_vm(vm, "dhclient", "-1", "-sf", "/bin/true", "-lf", str(lf), "-pf", str(pf), "eth0")
    await env.in_vm(vm, "dhclient", "-x", "-sf", "/bin/true", "-lf", str(lf), "-pf", str(pf), "eth0", ok=(0, 1))
    assert "dhcp-server-identifier 10.77.0.2" in lf.read_text()
    return d


async def _probe(env: Env, vm: Vm, *args: str) -> dict:  # type: ignore[type-arg]
    res = await env.in_vm(vm, "/usr/bin/python3", str(PROBE), *args, timeout=60)
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_cloud_init_cloudstack_and_ec2_datasources(env: Env) -> None:
    _svc, _l3, a, _b = await _setup(env)
    lease_dir = await _dhclient_lease(env, a)
    expected = decode_minified(seed_userdata())
    cs = await _probe(env, a, "cloudstack", str(env.tmp / "ci-cs"), str(lease_dir))
    assert cs["ok"] and cs["server"] == "10.77.0.2"
    assert cs["userdata"] == expected and cs["instance_id"] == "vm-alpha" and cs["hostname"] == "alpha"
    assert cs["keys"] == [KEY]
    assert cs["cfg"].get("password") == "s3cret"  # CloudStack password server
    ec2 = await _probe(env, a, "ec2", str(env.tmp / "ci-ec2"))
    assert ec2["ok"] and ec2["server"] == "http://169.254.169.254"
    assert ec2["userdata"] == expected and ec2["instance_id"] == "vm-alpha" and ec2["keys"] == [KEY]


async def test_cloud_init_parses_users_and_groups(env: Env) -> None:
    svc, l3, a, _b = await _setup(env)
    doc = ("#cloud-config\ngroups:\n  - ubuntu: [foo, bar]\n  - cloud-users\nusers:\n  - default\n"
           "  - name: foobar\n    gecos: Foo B. Bar\n    groups: users\n  - name: barfoo\n"
           "    sudo: ALL=(ALL) NOPASSWD:ALL\n    groups: users, admin\n    lock_passwd: true\n")
    await svc.apply_userdata(UserdataSpec(vm_uuid="vm-alpha", l3_uuid=l3.uuid, vm_ip="10.77.0.11", userdata=doc))
    ec2 = await _probe(env, a, "ec2", str(env.tmp / "ci-ec2"))
    assert ec2["userdata"] == doc and isinstance(yaml.safe_load(doc), dict)
    f = env.tmp / "ud.yaml"
    f.write_text(ec2["userdata"])
    parsed = await _probe(env, a, "users", str(f))
    assert {"foobar", "barfoo"} <= set(parsed["users"])
    assert {"ubuntu", "cloud-users"} <= set(parsed["groups"])
