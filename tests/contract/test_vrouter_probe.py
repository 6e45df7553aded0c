"""``/vrouter/probeips`` on a real in-process agent: ARP probes on an interface of this machine reach a
device holding the address in a network namespace this test creates (veth pair); a free address, an
unknown bridge and bad input are answered as such. Then the controller's use of it before a router takes its
addresses (controller/vrouter_provider/addrcheck.py), against the contract env's hosts: an address in use is
skipped for a free one, a gateway in use is refused, so are addresses in use again and again
(APPLIANCE_VM.1000). Root only (raw socket, namespaces)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_harness import Agent, running_agent
from test_controller_compute import Env

from controller.errors import OperationError
from controller.resources import ipam
from controller.vrouter_provider.addrcheck import check_addresses

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a namespace and a raw socket)")

NS, OUTER, INNER = f"zsprobe{os.getpid() % 10000}", f"zsprb{os.getpid() % 10000}a", f"zsprb{os.getpid() % 10000}b"
HELD, FREE = "198.51.100.7", "198.51.100.8"


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture
def l2() -> Iterator[tuple[str, str]]:
    """OUTER (this namespace, no address) wired to INNER (namespace NS, holding HELD); (OUTER, INNER's MAC)."""
    _ip("netns", "add", NS)
    try:
        _ip("link", "add", OUTER, "type", "veth", "peer", "name", INNER)
        _ip("link", "set", INNER, "netns", NS)
        _ip("netns", "exec", NS, "ip", "addr", "add", f"{HELD}/24", "dev", INNER)
        _ip("netns", "exec", NS, "ip", "link", "set", INNER, "up")
        _ip("link", "set", OUTER, "up")
        mac = subprocess.run(["ip", "netns", "exec", NS, "cat", f"/sys/class/net/{INNER}/address"], check=True,
                             capture_output=True, text=True).stdout.strip()
        yield OUTER, mac
    finally:
        subprocess.run(["ip", "link", "del", OUTER], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with running_agent(tmp_path) as a:
        yield a


async def test_a_held_address_answers_and_a_free_one_does_not(agent: Agent, l2: tuple[str, str]) -> None:
    bridge, inner_mac = l2
    status, body = await agent.call("/vrouter/probeips", {"probes": [
        {"bridgeName": bridge, "ip": HELD}, {"bridgeName": bridge, "ip": FREE},
        {"bridgeName": "zsnosuchbr0", "ip": HELD}],
        "timeout": 1.5})
    assert status == 200, body
    assert body["results"] == [
        {"bridgeName": bridge, "ip": HELD, "probed": True, "mac": inner_mac},
        {"bridgeName": bridge, "ip": FREE, "probed": True, "mac": None},
        {"bridgeName": "zsnosuchbr0", "ip": HELD, "probed": False, "mac": None}]


async def test_bad_input_is_refused_naming_the_field(agent: Agent) -> None:
    for body, field in (({"probes": [{"bridgeName": "br0; reboot", "ip": HELD}]}, "bridgeName"),
                        ({"probes": [{"bridgeName": "br0", "ip": "198.51.100.300"}]}, "ip"),
                        ({"probes": [], "timeout": 60}, "timeout")):
        status, reply = await agent.call("/vrouter/probeips", body)
        assert status == 400 and field in str(reply), (body, status, reply)


@pytest.fixture
def eth3() -> Iterator[None]:
    """The contract env's hosts know a bridge ``br_eth3`` (their test node); here it is a veth of this namespace
    whose peer, in namespace NS, holds 198.51.100.7-.9 and .1 (the gateway)."""
    _ip("netns", "add", NS)
    try:
        _ip("link", "add", "br_eth3", "type", "veth", "peer", "name", INNER)
        _ip("link", "set", INNER, "netns", NS)
        for a in (".1", ".7", ".8", ".9"):
            _ip("netns", "exec", NS, "ip", "addr", "add", f"198.51.100{a}/24", "dev", INNER)
        _ip("netns", "exec", NS, "ip", "link", "set", INNER, "up")
        _ip("link", "set", "br_eth3", "up")
        yield
    finally:
        subprocess.run(["ip", "link", "del", "br_eth3"], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


async def _nic_at(env: Env, vm: dict[str, Any], l3: str, ip: str | None) -> dict[str, Any]:
    """Put the VM's NIC on ``ip`` of ``l3`` (an allocated address), or on no pool address (``None``: the
    gateway, as a router with SNAT holds it)."""
    nic = vm["vmNics"][0]
    async with env.core.db.write() as tx:
        old = await tx.fetchone("SELECT ip, usedIpUuid FROM VmNic WHERE uuid=?", (nic["uuid"],))
        if ip is not None and old["ip"] == ip:
            # IPAM may already have given the NIC this address (it picks at random in the range)
            return dict(await tx.fetchone("SELECT * FROM VmNic WHERE uuid=?", (nic["uuid"],)))
        values: dict[str, Any] = {"usedIpUuid": None, "ip": "198.51.100.1"}
        if ip is not None:
            used = await ipam.allocate_ip(tx, l3, ip, used_for="VmNic")
            values = {"usedIpUuid": used["uuid"], "ip": ip}
        if old["usedIpUuid"]:
            await ipam.release(tx, old["usedIpUuid"])
        await tx.update("VmNic", {"uuid": nic["uuid"]}, values)
    return dict(await env.core.db.fetchone("SELECT * FROM VmNic WHERE uuid=?", (nic["uuid"],)))


async def test_router_addresses_in_use_are_skipped_or_refused(env: Env, eth3: None) -> None:
    l2 = await env.inv("CreateL2NoVlanNetwork", name="l2-3", zoneUuid=env.ids["zone"], physicalInterface="eth3")
    await env.call("AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"], clusterUuid=env.ids["cluster"])
    l3 = (await env.inv("CreateL3Network", name="l3-3", l2NetworkUuid=l2["uuid"]))["uuid"]
    await env.call("AddIpRange", l3NetworkUuid=l3, name="r", startIp="198.51.100.7", endIp="198.51.100.10",
                   netmask="255.255.255.0", gateway="198.51.100.1")
    vm = await env.inv("CreateVmInstance", name="holder", instanceOfferingUuid=env.ids["offering"],
                       imageUuid=env.ids["image"], l3NetworkUuids=[l3])
    host = dict(await env.core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (vm["hostUuid"],)))
    # .7 (the NIC's), .8 and .9 answer on the L2; .8 and .9 are also allocated (to VIPs, say): .10 is the
    # only address IPAM can give. .7 is skipped, the NIC ends on .10, .7 goes back to the pool
    await _nic_at(env, vm, l3, "198.51.100.7")
    async with env.core.db.write() as tx:
        for ip in ("198.51.100.8", "198.51.100.9"):
            await ipam.allocate_ip(tx, l3, ip, used_for="Vip")
    await check_addresses(env.core, host, vm["uuid"])
    nic = dict(await env.core.db.fetchone("SELECT * FROM VmNic WHERE uuid=?", (vm["vmNics"][0]["uuid"],)))
    assert nic["ip"] == "198.51.100.10" and nic["usedIpUuid"], nic
    assert sorted(r[0] for r in await env.core.db.fetchall("SELECT ip FROM UsedIp WHERE l3NetworkUuid=?", (l3,))) == [
        "198.51.100.10", "198.51.100.8", "198.51.100.9"]
    # the gateway a router takes with SNAT cannot be skipped: refused
    await _nic_at(env, vm, l3, None)
    with pytest.raises(OperationError, match=r"gateway IP\[198\.51\.100\.1\].*answers on bridge br_eth3") as e:
        await check_addresses(env.core, host, vm["uuid"])
    assert e.value.code == "APPLIANCE_VM.1000"
    # every address IPAM can give answers (.10 too now): refused after 3 skips
    await asyncio.to_thread(_ip, "netns", "exec", NS, "ip", "addr", "add", "198.51.100.10/24", "dev", INNER)
    await _nic_at(env, vm, l3, "198.51.100.10")
    with pytest.raises(OperationError, match=r"has been occupied by another device") as e:
        await check_addresses(env.core, host, vm["uuid"])
    assert e.value.code == "APPLIANCE_VM.1000"
