"""Issue 12 end to end on the testbed (one host): the VirtualRouter provider with a real router VM.

The guest L3 (10.100.0.0/24) takes DHCP + Userdata from Flat and SNAT from VirtualRouter; the router's
offering uses a "public" L3 (192.168.77.0/24) on the same L2, whose gateway 192.168.77.1 is an "internet"
namespace this test creates on the host's bridge (no real uplink). A tiny VM's start creates the router
(image from scripts/build-vr-image), which owns the guest gateway; the VM fetches a page from the internet
namespace's HTTP server, whose log must show the router's public IP as the client (SNAT); the internet
namespace then reaches the guest over SSH through an EIP and through a port-forwarding rule (also after the
VM is stopped and started)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import REPO, LabHost, Testbed, TinyImage
from test_flatnet import Flat, flat_lab

import vrouter
from controller.vrouter_provider import router as router_mod
from vrouter.contract import code_digest

MiB = 1 << 20
NS, VETH = "zsvrinet", "zsvrinet0"
INTERNET = "192.168.77.1"


def vr_image() -> Path:
    """The router image, built (cached) by scripts/build-vr-image into build/vrouter."""
    cp = subprocess.run([str(REPO / "scripts" / "build-vr-image")], capture_output=True, text=True, timeout=900,
                        cwd=REPO)
    assert cp.returncode == 0, f"build-vr-image failed rc={cp.returncode}:\n{cp.stdout}{cp.stderr}"
    return Path(cp.stdout.split()[0])


class Internet:
    """A namespace on the host's bridge holding the public L3's gateway address, serving HTTP on 8080 and
    logging each client's address."""

    def __init__(self, host: LabHost, log: Path) -> None:
        self.host, self.log = host, log
        self.cleanup()
        for argv in (("ip", "netns", "add", NS),
                     ("ip", "link", "add", VETH, "type", "veth", "peer", "name", "zsvrinet1"),
                     ("ip", "link", "set", "zsvrinet1", "netns", NS),
                     ("ip", "link", "set", VETH, "master", host.bridge, "up"),
                     ("ip", "netns", "exec", NS, "ip", "addr", "add", f"{INTERNET}/24", "dev", "zsvrinet1"),
                     ("ip", "netns", "exec", NS, "ip", "link", "set", "zsvrinet1", "up"),
                     ("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")):
            host.run(*argv)
        self.out = log.open("w")
        self.server = subprocess.Popen(host.cmd("ip", "netns", "exec", NS, "python3", "-u", "-m", "http.server",
                                                "8080", "--bind", INTERNET, "--directory", "/nonexistent-dir"),
                                       stdout=self.out, stderr=subprocess.STDOUT)

    def clients(self) -> str:
        return self.log.read_text()

    def cleanup(self) -> None:
        self.host.run("ip", "link", "del", VETH, check=False)
        self.host.run("ip", "netns", "del", NS, check=False)

    def close(self) -> None:
        self.server.kill()
        self.server.wait()
        self.out.close()
        self.cleanup()


@pytest.fixture
def internet(testbed: Testbed, tmp_path: Path) -> Iterator[Internet]:
    net = Internet(testbed.hosts[0], tmp_path / "internet.log")
    try:
        yield net
    finally:
        net.close()


async def _one(lab: Flat, api: str, **cond: str) -> list[dict[str, Any]]:
    conditions = [{"name": k, "op": "=", "value": v} for k, v in cond.items()]
    status, body = await lab.ctl.raw(api, conditions=conditions)
    assert status == 200, body
    return list(body["inventories"])


async def _setup(lab: Flat, image_file: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The public L3 (gateway = the internet namespace), the router image, the zone's first (default) router
    offering, and VirtualRouter SNAT + Eip on the guest L3 (which has Flat DHCP + Userdata)."""
    ctl = lab.ctl
    guest_l3 = (await _one(lab, "QueryL3Network", uuid=ctl.ids["l3"]))[0]
    public = await ctl.inv("CreateL3Network", name="public", l2NetworkUuid=guest_l3["l2NetworkUuid"])
    await ctl.inv("AddIpRange", l3NetworkUuid=public["uuid"], name="pub", startIp="192.168.77.10",
                  endIp="192.168.77.100", netmask="255.255.255.0", gateway=INTERNET)
    image = await ctl.inv("AddImage", name="vrouter", url=f"file://{image_file}", format="qcow2", system=True)
    offering = await ctl.inv("CreateVirtualRouterOffering", name="vr", cpuNum=1, cpuSpeed=1000,
                             memorySize=256 * MiB, zoneUuid=guest_l3["zoneUuid"],
                             managementNetworkUuid=public["uuid"], imageUuid=image["uuid"])
    assert offering["isDefault"] is True and offering["publicNetworkUuid"] == public["uuid"], offering
    assert offering["type"] == "VirtualRouter", offering
    vr_provider = (await _one(lab, "QueryNetworkServiceProvider", type="VirtualRouter"))[0]["uuid"]
    await ctl.inv("AttachNetworkServiceToL3Network", l3NetworkUuid=guest_l3["uuid"],
                  networkServices={vr_provider: ["SNAT", "Eip", "PortForwarding"]})
    return guest_l3, public


async def _guest(lab: Flat, name: str, l3_uuid: str) -> dict[str, Any]:
    return await lab.ctl.inv("CreateVmInstance", name=name, instanceOfferingUuid=lab.ctl.ids["offering"],
                             imageUuid=lab.ctl.ids["image"], l3NetworkUuids=[l3_uuid],
                             hostUuid=next(iter(lab.hosts)), systemTags=[f"sshkey::{lab.pub}"])


async def test_vm_behind_the_router_snat_then_eip(testbed: Testbed, tiny: TinyImage, tmp_path: Path,
                                                  internet: Internet) -> None:
    image_file = tmp_path / "vrouter.qcow2"
    shutil.copyfile(await asyncio.to_thread(vr_image), image_file)
    async with flat_lab("vrouter", testbed, tiny, tmp_path, hosts=1, services=True, log_tail=25,
                        agent_out_tail=30) as lab:
        guest_l3, public = await _setup(lab, image_file)
        t0 = time.monotonic()
        vm = await _guest(lab, "behind-snat", guest_l3["uuid"])
        print(f"\nfirst VM on a new VR L3 -> Running (router created, agent ready, SNAT pushed): "
              f"{time.monotonic() - t0:.1f} s")
        (vr,) = await _one(lab, "QueryVirtualRouterVm")
        assert (await _one(lab, "QueryApplianceVm"))[0]["uuid"] == vr["uuid"]
        assert vr["name"] == f"virtualRouter.l3.{guest_l3['uuid']}" and vr["type"] == "ApplianceVm", vr
        assert vr["applianceVmType"] == "VirtualRouter" and vr["state"] == "Running", vr
        assert vr["status"] == "Connected", vr
        assert vr["managementNetworkUuid"] == vr["publicNetworkUuid"] == public["uuid"], vr
        assert vr["defaultRouteL3NetworkUuid"] == public["uuid"], vr
        assert "agentToken" not in vr and "token" not in str(vr).lower(), vr
        row = await lab.core.db.fetchone("SELECT agentToken FROM ApplianceVm WHERE uuid=?", (vr["uuid"],))
        assert row[0].startswith("sealed:v1:"), "the router's agent token is stored in clear"
        nics = {n["l3NetworkUuid"]: n for n in vr["vmNics"]}
        assert nics[public["uuid"]]["metaData"] == "3" and nics[public["uuid"]]["deviceId"] == 0, vr
        assert nics[guest_l3["uuid"]]["metaData"] == "4" and nics[guest_l3["uuid"]]["ip"] == "10.100.0.1", vr
        public_ip = nics[public["uuid"]]["ip"]
        assert (await _one(lab, "QueryVmInstance", uuid=vm["uuid"]))[0]["state"] == "Running"

        m = await lab.wait_console(vm, r"tiny: LEASE eth0 (\S+)/", timeout=240)
        assert m.group(1) == vm["vmNics"][0]["ip"]
        probe = f"GET /vr-probe-{vm['uuid']} "
        deadline = time.monotonic() + 180
        while True:  # under load the first SSH/HTTP attempts may time out; the result must come
            # (busybox 1.35's wget -T segfaults: bounded by busybox timeout instead)
            url = f"http://{INTERNET}:8080/vr-probe-{vm['uuid']}"
            out = await lab.ssh_ok(vm, f"busybox timeout 20 wget -q -O - {url} 2>&1; ip route", timeout=180)
            if probe in internet.clients() or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
        assert "default via 10.100.0.1" in out, out
        log = internet.clients()
        hits = [line for line in log.splitlines() if probe in line]
        assert hits, f"the internet namespace saw no request from the guest:\n{log}\nguest: {out}"
        # SNAT: the request comes from the router's public address, not the guest's private one
        assert all(line.startswith(f"{public_ip} ") for line in hits), (public_ip, hits)
        assert vm["vmNics"][0]["ip"] not in log
        await _eip(lab, vm, public["uuid"], public_ip, internet)
        await _port_forwarding(lab, vm, public["uuid"])
        await _agent_code_push(lab, vr, vm, public_ip, internet)


async def _agent_code_push(lab: Flat, vr: dict[str, Any], vm: dict[str, Any], public_ip: str,
                           internet: Internet) -> None:
    """The controller ships other agent code than the router image's (here: its VERSION changed): the
    reconnect pushes it over the channel, the agent restarts with it (no new image) and the router keeps
    routing (SNAT still works)."""
    files, _ = router_mod.agent_code()
    old = f'VERSION = "{vrouter.VERSION}"'
    assert old in files["__init__.py"]
    pushed = {**files, "__init__.py": files["__init__.py"].replace(old, 'VERSION = "0.0.0+pushed"')}
    mp = pytest.MonkeyPatch()
    mp.setattr(router_mod, "_AGENT_CODE", (pushed, code_digest(pushed)))
    t0 = time.monotonic()
    try:
        again = await lab.ctl.inv("ReconnectVirtualRouter", vmInstanceUuid=vr["uuid"])
    finally:
        mp.undo()
    print(f"reconnect with an agent code push (agent restarted, state pushed): {time.monotonic() - t0:.1f} s")
    assert again["uuid"] == vr["uuid"] and again["status"] == "Connected", again
    row = await lab.core.db.fetchone("SELECT agentVersion FROM ApplianceVm WHERE uuid=?", (vr["uuid"],))
    assert row[0] == "0.0.0+pushed", row[0]
    hits = await _probe(lab, vm, internet, f"pushed-{vm['uuid']}")
    assert hits and all(line.startswith(f"{public_ip} ") for line in hits), (public_ip, hits)


async def _probe(lab: Flat, vm: dict[str, Any], internet: Internet, tag: str) -> list[str]:
    """The internet namespace's log lines of the guest's request ``/<tag>`` (retried until seen, 180 s)."""
    probe = f"GET /{tag} "
    deadline = time.monotonic() + 180
    while probe not in internet.clients() and time.monotonic() < deadline:
        await lab.ssh_ok(vm, f"busybox timeout 20 wget -q -O - http://{INTERNET}:8080/{tag} 2>&1; true",
                         timeout=180)
        await asyncio.sleep(1)
    return [line for line in internet.clients().splitlines() if probe in line]


async def _from_internet(lab: Flat, vip: str, *, tries: int, port: int = 22) -> subprocess.CompletedProcess[str]:
    """``hostname`` over SSH from the internet namespace to ``vip``:``port`` (retried ``tries`` times)."""
    h = next(iter(lab.hosts.values()))
    argv = ["ip", "netns", "exec", NS, "ssh", "-p", str(port), "-i", str(lab.key), "-o", "BatchMode=yes", "-o",
            "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
            "ConnectTimeout=8", f"root@{vip}", "hostname"]
    for _ in range(tries):
        cp = await asyncio.to_thread(h.run, *argv, check=False, timeout=40)
        if cp.returncode == 0:
            break
        await asyncio.sleep(2)
    return cp


async def _eip(lab: Flat, vm: dict[str, Any], public_l3: str, public_ip: str, internet: Internet) -> None:
    """An EIP on the guest's NIC: the internet reaches the guest at the VIP (SSH), the guest's traffic leaves
    from the VIP; detached: the VIP answers no more and the guest is SNAT'd by the router again."""
    ctl = lab.ctl
    vip = await ctl.inv("CreateVip", name="vip", l3NetworkUuid=public_l3)
    eip = await ctl.inv("CreateEip", name="eip", vipUuid=vip["uuid"], vmNicUuid=vm["vmNics"][0]["uuid"])
    assert eip["vipIp"] == vip["ip"] and eip["guestIp"] == vm["vmNics"][0]["ip"], eip
    cp = await _from_internet(lab, vip["ip"], tries=20)
    assert cp.returncode == 0 and cp.stdout.strip() == vm["name"], cp
    hits = await _probe(lab, vm, internet, f"eip-{vm['uuid']}")
    assert hits and all(line.startswith(f"{vip['ip']} ") for line in hits), (vip["ip"], hits)
    await ctl.inv("DetachEip", uuid=eip["uuid"])
    cp = await _from_internet(lab, vip["ip"], tries=1)
    assert cp.returncode != 0, cp
    hits = await _probe(lab, vm, internet, f"detached-{vm['uuid']}")
    assert hits and all(line.startswith(f"{public_ip} ") for line in hits), (public_ip, hits)


async def _port_forwarding(lab: Flat, vm: dict[str, Any], public_l3: str) -> None:
    """A port-forwarding rule VIP:2222 -> guest:22 (from the public L3's network only): the internet namespace
    SSHes into the guest through it; the VM stopped and started, again (the router gets the rule back with the
    VM's start)."""
    ctl = lab.ctl
    nic = vm["vmNics"][0]
    vip = await ctl.inv("CreateVip", name="pf-vip", l3NetworkUuid=public_l3)
    rule = await ctl.inv("CreatePortForwardingRule", name="ssh", vipUuid=vip["uuid"], vipPortStart=2222,
                         privatePortStart=22, protocolType="TCP", allowedCidr="192.168.77.0/24",
                         vmNicUuid=nic["uuid"])
    assert (rule["vipIp"], rule["guestIp"], rule["vipPortEnd"], rule["privatePortEnd"]) == (
        vip["ip"], nic["ip"], 2222, 22), rule
    cp = await _from_internet(lab, vip["ip"], tries=20, port=2222)
    assert cp.returncode == 0 and cp.stdout.strip() == vm["name"], cp
    await ctl.inv("StopVmInstance", uuid=vm["uuid"], type="cold")
    await ctl.inv("StartVmInstance", uuid=vm["uuid"])
    cp = await _from_internet(lab, vip["ip"], tries=40, port=2222)   # the guest boots again under TCG
    assert cp.returncode == 0 and cp.stdout.strip() == vm["name"], cp


async def test_a_killed_router_comes_back_by_itself_and_by_the_next_vm_start(
        testbed: Testbed, tiny: TinyImage, tmp_path: Path, internet: Internet) -> None:
    """Better than 1.0 (which failed the VM start: "We don't have HA feature now"): the router's QEMU is killed
    out of band; the health check re-creates the router by itself (it is stateless) and the VM reaches the
    internet through the new one. Killed again, the next VM start on the L3 re-creates it, and both VMs
    reach the internet."""
    image_file = tmp_path / "vrouter.qcow2"
    shutil.copyfile(await asyncio.to_thread(vr_image), image_file)
    async with flat_lab("vrouter2", testbed, tiny, tmp_path, hosts=1, services=True, log_tail=25,
                        agent_out_tail=30) as lab:
        guest_l3, public = await _setup(lab, image_file)
        first = await _guest(lab, "vm-one", guest_l3["uuid"])
        (dead,) = await _one(lab, "QueryVirtualRouterVm")
        await lab.wait_console(first, r"tiny: LEASE eth0 ", timeout=240)
        host = lab.hosts[dead["hostUuid"]]
        await lab.ctl.inv("UpdateGlobalConfig", category="virtualRouter", name="ping.interval", value="3")
        host.run("virsh", "-c", "qemu:///system", "destroy", dead["uuid"])   # the router's QEMU dies
        t0 = time.monotonic()
        healed = await _healed(lab, dead["uuid"])
        print(f"\nrouter QEMU killed -> a new router Connected by the health check (interval 3 s): "
              f"{time.monotonic() - t0:.1f} s")
        public_ip = next(n["ip"] for n in healed["vmNics"] if n["l3NetworkUuid"] == public["uuid"])
        hits = await _probe(lab, first, internet, f"healed-{first['uuid']}")
        assert hits and all(line.startswith(f"{public_ip} ") for line in hits), (public_ip, hits)
        await lab.ctl.inv("UpdateGlobalConfig", category="virtualRouter", name="ping.interval", value="3600")
        old = healed
        host.run("virsh", "-c", "qemu:///system", "destroy", old["uuid"])    # again: now a VM start heals it
        second = await _guest(lab, "vm-two", guest_l3["uuid"])
        assert (await _one(lab, "QueryVmInstance", uuid=second["uuid"]))[0]["state"] == "Running"
        (new,) = await _one(lab, "QueryVirtualRouterVm")
        assert new["uuid"] != old["uuid"] and new["state"] == "Running" and new["status"] == "Connected", new
        nics = {n["l3NetworkUuid"]: n for n in new["vmNics"]}
        assert nics[guest_l3["uuid"]]["ip"] == "10.100.0.1", new
        public_ip = nics[public["uuid"]]["ip"]
        await lab.wait_console(second, r"tiny: LEASE eth0 ", timeout=240)
        for vm in (second, first):
            hits = await _probe(lab, vm, internet, f"after-{vm['uuid']}")
            assert hits and all(line.startswith(f"{public_ip} ") for line in hits), (vm["name"], public_ip, hits)


async def _healed(lab: Flat, dead: str) -> dict[str, Any]:
    """The router that replaces ``dead`` without any API call (the health check), Running and Connected."""
    deadline = time.monotonic() + 420
    while True:
        routers = await _one(lab, "QueryVirtualRouterVm")
        if (len(routers) == 1 and routers[0]["uuid"] != dead and routers[0]["state"] == "Running" and
                routers[0]["status"] == "Connected"):
            return routers[0]
        assert time.monotonic() < deadline, f"the router did not come back by itself: {routers}"
        await asyncio.sleep(3)
