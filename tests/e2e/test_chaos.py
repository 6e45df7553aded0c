"""Chaos on the testbed (issue 18, reliability 2, 6 and 8), with the controller as a real process
(``python -m controller.server``) so it can be SIGKILLed, and real agents, libvirtd and TCG guests.

* The quick-start order (hosts first, then primary storage, L2 and L3 with Flat DHCP): the first VM gets its
  lease.
* Controller SIGKILL while 6 creates are in flight; an agent SIGKILL during a VM start; a host's management
  link cut past ``host/ping.maxFailure`` (lowered here) and restored (Disconnected, its VM Unknown, then
  Connected and Running by itself); libvirtd restarted under a running agent.

After each, ``zstack-ctl check`` must report nothing within a bound; the time it took is printed. The host
operations are generic (a command run inside a host, a process killed by its pid file), so the tests do not
depend on how the testbed builds its hosts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from lab import PS_URL, REPO, LabHost, Testbed, TinyImage, kill_agent, reset_host

MiB = 1 << 20
CHECK_BOUND = 180.0  # seconds: the most a check may take to come back clean after a fault
TRANSITIONAL = ("Created", "Starting", "Stopping", "Rebooting", "Migrating", "Destroying")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


class Controller:
    """A controller process on a fresh database; ``api`` calls it as admin."""

    def __init__(self, tmp: Path, image_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg_file = tmp / "controller.json"
        # the tiny image is recorded from its file (no backup storage): the lab-only setting, as in test_compute
        self.cfg_file.write_text(json.dumps({"db_path": str(tmp / "controller.db"), "log_dir": str(tmp / "log"),
                                             "listen_host": "0.0.0.0", "port": self.port,
                                             "allow_host_local_images": True,
                                             "image_import_dirs": [str(image_dir)]}))
        self.log = tmp / "controller.out"
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.session = ""
        self.ids: dict[str, str] = {}

    async def start(self) -> None:
        out = await asyncio.to_thread(open, self.log, "ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.server", "--config", str(self.cfg_file), cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=out)
        out.close()
        if self.http is None:
            self.http = aiohttp.ClientSession(trust_env=False)
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.http.get(self.url + "/readyz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"controller not ready; see {self.log}"
            await asyncio.sleep(0.2)
        self.session = (await self.inv("LogInByAccount", accountName="admin", password="password"))["uuid"]

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
            await asyncio.wait_for(self.proc.wait(), 30)

    async def close(self) -> None:
        await self.kill(signal.SIGTERM)
        if self.http is not None:
            await self.http.close()

    async def raw(self, name: str, /, *, background: bool = False, **params: Any) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        url = f"{self.url}/v1/{name}" + ("?async=true" if background else "")
        async with self.http.post(url, json=params, headers={"Authorization": f"OAuth {self.session}"}) as r:
            return r.status, await r.json()

    async def inv(self, name: str, /, **params: Any) -> dict[str, Any]:
        status, body = await self.raw(name, **params)
        assert status == 200 and body["success"], f"{name}: {status} {body}"
        return dict(body.get("inventory", body))

    async def vms(self) -> list[dict[str, Any]]:
        return list((await self.inv("QueryVmInstance", conditions=[]))["inventories"])

    async def host(self, uuid: str) -> dict[str, Any]:
        return dict((await self.inv("QueryHost", conditions=[{"name": "uuid", "op": "=", "value": uuid}]))[
            "inventories"][0])

    async def config(self, category: str, name: str, value: str) -> None:
        await self.inv("UpdateGlobalConfig", category=category, name=name, value=value)

    async def check(self) -> tuple[int, str]:
        """``zstack-ctl check`` against this controller: (exit status, output)."""
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controller.ctl", "--config", str(self.cfg_file), "check", cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO), "ZSTACK_ADMIN_PASSWORD": "password"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await p.communicate()
        return int(p.returncode or 0), out.decode()

    async def consistent_within(self, what: str, bound: float = CHECK_BOUND) -> float:
        """Poll ``zstack-ctl check`` until it reports nothing and no VM is in a transitional state; print and
        return the time that took."""
        t0 = time.monotonic()
        out = ""
        while time.monotonic() - t0 < bound:
            rc, out = await self.check()
            if rc == 0 and not [v for v in await self.vms() if v["state"] in TRANSITIONAL]:
                took = time.monotonic() - t0
                print(f"\n{what}: zstack-ctl check clean {took:.1f} s after the fault was over")
                return took
            await asyncio.sleep(2)
        raise AssertionError(f"{what}: zstack-ctl check not clean after {bound} s:\n{out}\n"
                             f"VMs: {[(v['name'], v['state']) for v in await self.vms()]}")

    async def create_vm(self, name: str, host_uuid: str | None = None, *, background: bool = False) -> Any:
        params: dict[str, Any] = {"name": name, "instanceOfferingUuid": self.ids["offering"],
                                  "imageUuid": self.ids["image"], "l3NetworkUuids": [self.ids["l3"]]}
        if host_uuid:
            params["hostUuid"] = host_uuid
        if background:
            return await self.raw("CreateVmInstance", background=True, **params)
        return await self.inv("CreateVmInstance", **params)


async def quick_start(c: Controller, hosts: list[LabHost], tiny: TinyImage) -> dict[str, LabHost]:
    """ZStack's quick-start order: zone, cluster, hosts; then primary storage, L2, L3 (Flat DHCP + Userdata)
    attached to the cluster that already has Connected hosts."""
    zone = await c.inv("CreateZone", name="z")
    cluster = await c.inv("CreateCluster", name="c", zoneUuid=zone["uuid"], hypervisorType="KVM")
    added = {}
    for h in hosts:
        inv = await c.inv("AddKVMHost", name=h.name, managementIp=h.ip, username=h.ssh_user,
                          password=h.ssh_password, clusterUuid=cluster["uuid"])
        added[inv["uuid"]] = h
    ps = await c.inv("AddLocalPrimaryStorage", name="ls", zoneUuid=zone["uuid"], url=PS_URL)
    await c.inv("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cluster["uuid"])
    l2 = await c.inv("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
    await c.inv("AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"], clusterUuid=cluster["uuid"])
    l3 = await c.inv("CreateL3Network", name="l3", l2NetworkUuid=l2["uuid"])
    await c.inv("AddIpRange", l3NetworkUuid=l3["uuid"], name="r", startIp="10.100.0.10", endIp="10.100.0.200",
                netmask="255.255.255.0", gateway="10.100.0.1")
    provider = (await c.inv("QueryNetworkServiceProvider", conditions=[
        {"name": "type", "op": "=", "value": "Flat"}]))["inventories"][0]["uuid"]
    await c.inv("AttachNetworkServiceToL3Network", l3NetworkUuid=l3["uuid"],
                networkServices={provider: ["DHCP", "Userdata"]})
    off = await c.inv("CreateInstanceOffering", name="tiny", cpuNum=1, cpuSpeed=1000, memorySize=128 * MiB)
    image = await c.inv("AddImage", name="tiny", url=f"file://{tiny.qcow2}", format="qcow2")
    c.ids = {"zone": zone["uuid"], "cluster": cluster["uuid"], "l3": l3["uuid"], "offering": off["uuid"],
             "image": image["uuid"]}
    return added


@pytest.fixture
async def cloud(testbed: Testbed, tiny: TinyImage, tmp_path: Path) -> AsyncIterator[tuple[Controller, dict]]:
    c = Controller(tmp_path, tiny.qcow2.parent)
    try:
        await c.start()
        hosts = await quick_start(c, testbed.hosts[:2], tiny)
        yield c, hosts
    finally:
        await c.close()
        for h in testbed.hosts[:2]:
            reset_host(h, flat=True, log_tail=15)


def _domains(h: LabHost) -> dict[str, str]:
    """uuid → libvirt state of every domain on the host."""
    out = h.run("virsh", "-c", "qemu:///system", "list", "--all", "--uuid", check=False).stdout.split()
    states = {}
    for u in out:
        st = h.run("virsh", "-c", "qemu:///system", "domstate", u, check=False).stdout.strip()
        states[u.replace("-", "")] = st
    return states


async def _until(pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not await pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s: {what}")
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


async def _console(h: LabHost, vm_uuid: str) -> str:
    return (await asyncio.to_thread(h.run, "cat", f"/var/lib/zstack-py/console/{vm_uuid}.log", check=False)).stdout


async def test_quick_start_order_first_vm_gets_its_lease(cloud: tuple[Controller, dict]) -> None:
    c, hosts = cloud
    for host_uuid, h in hosts.items():
        vm = await c.create_vm(f"first-{h.name}", host_uuid)
        ip = vm["vmNics"][0]["ip"]

        async def leased(vm_uuid: str = vm["uuid"], host: LabHost = h, want: str = ip) -> bool:
            return f"tiny: LEASE eth0 {want}/" in await _console(host, vm_uuid)

        took = await _until(leased, 240, f"the lease of {ip} on the console of {vm['name']}")
        print(f"\nquick-start order: {vm['name']} leased {ip} {took:.1f} s after its create returned")
    await c.consistent_within("quick-start order")


async def test_controller_sigkill_during_concurrent_creates(cloud: tuple[Controller, dict]) -> None:
    c, hosts = cloud
    for i in range(6):
        status, body = await c.create_vm(f"chaos{i}", list(hosts)[i % 2], background=True)
        assert status == 202, body

    def listed(h: LabHost) -> list[str]:
        return h.run("virsh", "-c", "qemu:///system", "list", "--all", "--uuid", check=False).stdout.split()

    async def some_domain() -> bool:  # as soon as one start reached its host: the others are still on the way
        return any(await asyncio.to_thread(lambda: [d for h in hosts.values() for d in listed(h)]))

    await _until(some_domain, 120, "a first domain of the 6 creates")
    await c.kill()  # SIGKILL while the others are still in flight
    before = {h: await asyncio.to_thread(_domains, lh) for h, lh in hosts.items()}
    print(f"\nSIGKILL with domains {[(h[:8], len(d)) for h, d in before.items()]}")
    await c.start()
    await c.consistent_within("controller SIGKILL during 6 creates")
    vms = await c.vms()
    for v in vms:
        assert v["state"] == "Running", v
        assert _domains(hosts[v["hostUuid"]]).get(v["uuid"]) == "running", v
    known = {v["uuid"] for v in vms}
    for lh in hosts.values():  # no domain outside the records
        assert set(_domains(lh)) <= known
    nics = [n["ip"] for v in vms for n in v["vmNics"]]
    assert len(set(nics)) == len(nics) == len(vms)
    # the rolled-back creates' capacity and addresses are free again: as many creates go through now
    for i in range(6 - len(vms)):
        assert (await c.create_vm(f"again{i}"))["state"] == "Running"
    await c.consistent_within("after creating the rolled-back VMs again")


async def test_agent_sigkill_during_vm_start(cloud: tuple[Controller, dict]) -> None:
    c, hosts = cloud
    await c.config("vm", "orphanDomain.destroy", "true")
    await c.config("host", "ping.interval", "2")
    host_uuid, h = next(iter(hosts.items()))
    status, body = await c.create_vm("killed-start", host_uuid, background=True)
    assert status == 202, body

    async def starting() -> bool:
        return any(v["state"] == "Starting" for v in await c.vms())

    await _until(starting, 60, "the VM row in Starting")
    await asyncio.sleep(1.0)  # inside the start on the host (image download / define / start)
    kill_agent(h, signal.SIGKILL)
    t0 = time.monotonic()
    await c.inv("ReconnectHost", uuid=host_uuid)  # what an operator does: redeploys and starts the agent
    print(f"\nagent SIGKILL during a start: host reconnected in {time.monotonic() - t0:.1f} s")
    await c.consistent_within("agent SIGKILL during a VM start")
    for v in await c.vms():
        assert v["state"] in ("Running", "Destroyed"), v


def _mgmt_iface(h: LabHost) -> str:
    out = h.run("ip", "-o", "-4", "addr", "show").stdout
    return next(line.split()[1] for line in out.splitlines() if f" {h.ip}/" in line)


async def test_host_network_cut_and_restored(cloud: tuple[Controller, dict]) -> None:
    c, hosts = cloud
    host_uuid, h = next(iter(hosts.items()))
    vm = await c.create_vm("net-cut", host_uuid)
    for name, value in (("ping.interval", "1"), ("ping.timeout", "1"), ("ping.maxFailure", "2")):
        await c.config("host", name, value)
    iface = _mgmt_iface(h)
    h.run("ip", "link", "set", iface, "down")
    try:
        async def disconnected() -> bool:
            return (await c.host(host_uuid))["status"] == "Disconnected" and \
                (await c.vms())[0]["state"] == "Unknown"

        took = await _until(disconnected, 60, "host Disconnected and its VM Unknown")
        print(f"\nlink cut: host Disconnected, VM Unknown after {took:.1f} s")
    finally:
        h.run("ip", "link", "set", iface, "up")
    t0 = time.monotonic()

    async def back() -> bool:
        vms = await c.vms()
        return (await c.host(host_uuid))["status"] == "Connected" and vms[0]["state"] == "Running"

    await _until(back, 120, "host Connected and its VM Running again by itself")
    print(f"link restored: host Connected, VM Running after {time.monotonic() - t0:.1f} s")
    assert (await c.vms())[0]["uuid"] == vm["uuid"]
    await c.consistent_within("host network cut past ping.maxFailure and restored")


async def test_libvirtd_restarted_under_a_running_agent(cloud: tuple[Controller, dict]) -> None:
    c, hosts = cloud
    host_uuid, h = next(iter(hosts.items()))
    vm = await c.create_vm("libvirtd-restart", host_uuid)
    pidfile = h.host_dir / "libvirtd.pid"
    # restart libvirtd the way the host runs it: its unit where systemd runs (socket-activated, so it may be
    # inactive while idle), else by its pid file
    h.run("sh", "-c", f"if test -d /run/systemd/system; then systemctl restart libvirtd; else "
                      f"kill $(cat {pidfile}); for i in $(seq 100); do kill -0 $(cat {pidfile}) 2>/dev/null || "
                      f"break; sleep 0.1; done; /usr/sbin/libvirtd -d --listen --pid-file {pidfile}; fi")
    t0 = time.monotonic()

    async def answers() -> bool:
        cp = await asyncio.to_thread(h.run, "virsh", "-c", "qemu:///system", "domstate", vm["uuid"], check=False)
        return cp.returncode == 0

    await _until(answers, 60, "libvirtd answering again")
    await c.consistent_within("libvirtd restarted under a running agent")
    assert (await c.vms())[0]["state"] == "Running"
    print(f"libvirtd restart: VM still Running, {time.monotonic() - t0:.1f} s")


async def test_agent_sigkill_during_volume_migration(cloud: tuple[Controller, dict]) -> None:
    c, hosts = cloud
    (src_uuid, _), (dst_uuid, dst) = list(hosts.items())[:2]
    vm = await c.create_vm("migrated", src_uuid)
    await c.inv("StopVmInstance", uuid=vm["uuid"], type="cold")
    status, body = await c.raw("LocalStorageMigrateVolume", background=True, volumeUuid=vm["rootVolumeUuid"],
                               destHostUuid=dst_uuid)
    assert status == 202, body
    await asyncio.sleep(0.5)  # the copy from the source agent to the destination agent is under way
    kill_agent(dst, signal.SIGKILL)
    assert c.http is not None

    async def job_done() -> bool:
        assert c.http is not None
        async with c.http.get(f"{c.url}/v1/jobs/{body['jobUuid']}",
                              headers={"Authorization": f"OAuth {c.session}"}) as r:
            return (await r.json())["state"] != "Processing"

    await _until(job_done, 300, "the migration job to end")
    t0 = time.monotonic()
    await c.inv("ReconnectHost", uuid=dst_uuid)
    print(f"\nagent SIGKILL during a volume migration: destination reconnected in {time.monotonic() - t0:.1f} s")
    await c.consistent_within("agent SIGKILL during a volume migration")
    # the volume lives on exactly one host, and the VM starts there
    vm_now = (await c.vms())[0]
    assert (await c.inv("StartVmInstance", uuid=vm_now["uuid"]))["state"] == "Running"
    await c.consistent_within("after starting the migrated-or-not VM")
