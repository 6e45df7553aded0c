"""The controller against real in-process agents (libvirt test driver + real StorageService/qemu-img):
hosts connected without SSH, VM lifecycle, 1.0's state machine errors, exact capacity accounting,
out-of-band state changes reported by the agents, and concurrent creation without over-commit."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from apiclient import Api

from controller.api.http import CORE
from controller.app import create_app
from controller.compute.hosts import add_connected_host
from controller.config import ControllerConfig
from kvmagent.config import AgentConfig
from kvmagent.driver.libvirt_driver import LibvirtDriver
from kvmagent.driver.testnode import write_node_xml
from kvmagent.server import CTX, wait_ready
from kvmagent.server import create_app as agent_app
from storage.service import StorageService
from zsutil.runner import run

GiB = 1 << 30
TINY_BUILD = Path(__file__).resolve().parents[2] / "build" / "tiny"  # scripts/build-tiny-image's default


@dataclass
class SimAgent:
    ip: str
    config: AgentConfig
    runner: web.AppRunner
    app: web.Application


async def start_agent(base: Path, ip: str, controller_url: str, *, cpus: int = 4, memory: int = 8 * GiB,
                      host_uuid: str | None = None, token: str | None = None) -> SimAgent:
    hu = host_uuid or uuid.uuid4().hex
    sd = base / hu
    # br_eth0 for the cloud, br_eth1..3 for the extra L2s a test attaches to a cluster with connected hosts
    # (AttachL2NetworkToCluster checks the bridge on every connected host)
    uri = write_node_xml(sd / "node.xml", cpus=cpus, mhz=2000, memory_bytes=memory,
                         bridges=("br_eth0", "br_eth1", "br_eth2", "br_eth3"))
    cfg = AgentConfig(host_uuid=hu, token=token or secrets.token_hex(16), controller_url=controller_url, listen_ip=ip,
                      port=7070, libvirt_uri=uri, domain_type="qemu", state_dir=sd, log_dir=sd / "log",
                      storage_roots=[str(base.parent)])
    app = agent_app(cfg, driver=LibvirtDriver(uri, state_dir=sd, domain_type="qemu"),
                    storage=StorageService(sd), reporter_backoff=(0.05, 0.5))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, ip, 7070).start()
    await asyncio.wait_for(wait_ready(app), 30)
    return SimAgent(ip, cfg, runner, app)


class Env(Api):
    """The API client (tests/apiclient.py) with the controller's url and core, the agents and the ids of
    the records every test starts with."""

    def __init__(self, client: TestClient, url: str) -> None:
        super().__init__(client)
        self.url = url
        self.agents: list[SimAgent] = []
        self.ids: dict[str, str] = {}

    @property
    def core(self) -> Any:
        return self.client.app[CORE]

    async def vm(self, uuid_: str) -> dict[str, Any]:
        return (await self.call("QueryVmInstance", conditions=[{"name": "uuid", "op": "=", "value": uuid_}]))[
            "inventories"][0]

    async def hosts(self) -> list[dict[str, Any]]:
        return (await self.call("QueryHost", conditions=[]))["inventories"]

    async def create_vm(self, name: str, /, **extra: Any) -> tuple[int, dict[str, Any]]:
        return await self.raw("CreateVmInstance", name=name, instanceOfferingUuid=self.ids["offering"],
                              imageUuid=self.ids["image"], l3NetworkUuids=[self.ids["l3"]], **extra)


async def _records(env: Env, tmp: Path) -> None:
    zone = await env.inv("CreateZone", name="z")
    cluster = await env.inv("CreateCluster", name="c", zoneUuid=zone["uuid"], hypervisorType="KVM")
    l2 = await env.inv("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
    await env.call("AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"], clusterUuid=cluster["uuid"])
    l3 = await env.inv("CreateL3Network", name="l3", l2NetworkUuid=l2["uuid"])
    await env.call("AddIpRange", l3NetworkUuid=l3["uuid"], name="r", startIp="10.10.0.10", endIp="10.10.3.250",
                   netmask="255.255.252.0", gateway="10.10.0.1")
    ps = await env.inv("AddLocalPrimaryStorage", name="ls", zoneUuid=zone["uuid"], url=str(tmp / "ps"))
    await env.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cluster["uuid"])
    off = await env.inv("CreateInstanceOffering", name="small", cpuNum=1, cpuSpeed=1000, memorySize=GiB)
    img = tmp / "img.qcow2"
    await run(["qemu-img", "create", "-f", "qcow2", str(img), "64M"], timeout=30)
    image = await env.inv("AddImage", name="tiny", url=f"file://{img}", format="qcow2")
    env.ids = {"zone": zone["uuid"], "cluster": cluster["uuid"], "l3": l3["uuid"], "offering": off["uuid"],
               "image": image["uuid"]}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    tiny = [str(TINY_BUILD), os.environ.get("ZSTACK_TINY_DIR") or str(TINY_BUILD)]
    cfg = ControllerConfig(db_path=str(tmp_path / "c.db"), log_dir=str(tmp_path / "log"), allow_host_local_images=True,
                           image_import_dirs=[str(tmp_path), *tiny])
    server = TestServer(create_app(cfg), host="127.0.0.1")
    async with TestClient(server) as client:
        e = Env(client, f"http://127.0.0.1:{server.port}")
        await e.login()
        await _records(e, tmp_path)
        try:
            for i in range(2):
                a = await start_agent(tmp_path / "agents", f"127.0.9.{11 + i}", e.url)
                e.agents.append(a)
                await add_connected_host(e.core, name=f"h{i}", cluster_uuid=e.ids["cluster"], ip=a.ip, port=7070,
                                         token=a.config.token, controller_url=e.url, uuid=a.config.host_uuid)
            yield e
        finally:
            for a in e.agents:
                await a.runner.cleanup()


async def _domains(agent: SimAgent) -> dict[str, Any]:
    return dict(await agent.app[CTX].driver.list_vms())


def _agent(env: Env, host_uuid: str) -> SimAgent:
    return next(a for a in env.agents if a.config.host_uuid == host_uuid)


async def _capacity_exact(env: Env) -> None:
    """Every host's available capacity = total − what its VMs (hostUuid = host) hold."""
    for h in await env.hosts():
        row = await env.core.db.fetchone("SELECT COALESCE(SUM(cpuNum*cpuSpeed),0), COALESCE(SUM(memorySize),0) "
                                         "FROM VmInstance WHERE hostUuid=?", (h["uuid"],))
        assert h["availableCpuCapacity"] == h["totalCpuCapacity"] - row[0], h
        reserved = 512 << 20
        assert h["availableMemoryCapacity"] == h["totalMemoryCapacity"] - reserved - row[1], h


async def test_hosts_connected_with_facts_and_capacity(env: Env) -> None:
    hosts = await env.hosts()
    assert {h["status"] for h in hosts} == {"Connected"} and len(hosts) == 2
    for h in hosts:
        assert h["totalCpuCapacity"] == 4 * 2000 and h["totalMemoryCapacity"] == 8 * GiB
        assert "password" not in h and "agentToken" not in h
    tags = await env.core.db.fetchall("SELECT tag FROM SystemTag WHERE resourceUuid=?", (hosts[0]["uuid"],))
    assert any(t["tag"].startswith("libvirt::version::") for t in tags)


async def test_lifecycle_state_machine_and_capacity(env: Env) -> None:
    status, body = await env.create_vm("vm1")
    assert status == 200, body
    vm = body["inventory"]
    assert vm["state"] == "Running" and vm["hostUuid"] and vm["cpuNum"] == 1 and vm["memorySize"] == GiB
    nic = vm["vmNics"][0]
    assert nic["mac"].startswith("fa:") and nic["mac"].endswith(":00") and nic["ip"].startswith("10.10.")
    assert nic["internalName"] == f"vnic{vm['internalId']}.0"
    agent = _agent(env, vm["hostUuid"])
    assert str((await _domains(agent))[vm["uuid"]]) in ("Running", "VmState.RUNNING")
    await _capacity_exact(env)
    # state machine: Start of a Running VM → 409 VM.1010
    status, body = await env.raw("StartVmInstance", uuid=vm["uuid"])
    assert status == 409 and body["error"]["code"] == "VM.1010", body
    st = await env.inv("StopVmInstance", uuid=vm["uuid"])
    assert st["state"] == "Stopped" and st["hostUuid"] is None and st["lastHostUuid"] == vm["hostUuid"]
    assert vm["uuid"] not in await _domains(agent)
    await _capacity_exact(env)
    status, body = await env.raw("RebootVmInstance", uuid=vm["uuid"])
    assert status == 409 and body["error"]["code"] == "VM.1010"
    st = await env.inv("StartVmInstance", uuid=vm["uuid"])
    assert st["state"] == "Running" and st["hostUuid"] == vm["hostUuid"]  # its root disk lives there
    assert (await env.inv("RebootVmInstance", uuid=vm["uuid"]))["state"] == "Running"
    # the test driver assigns no VNC port: the agent's error comes through as 502 with its code
    status, body = await env.raw("GetVmConsoleAddress", uuid=vm["uuid"])
    assert status == 502 and body["error"]["cause"]["code"] == "VM.NO_CONSOLE_PORT", body
    await env.call("DestroyVmInstance", uuid=vm["uuid"])
    d = await env.vm(vm["uuid"])
    assert d["state"] == "Destroyed" and d["hostUuid"] is None and d["vmNics"][0]["ip"] is None
    assert vm["uuid"] not in await _domains(agent)
    await env.call("DestroyVmInstance", uuid=vm["uuid"])  # twice: fine (1.0)
    await env.call("DestroyVmInstance", uuid=uuid.uuid4().hex)  # unknown uuid: success (1.0)
    status, body = await env.raw("StopVmInstance", uuid=vm["uuid"])
    assert status == 409 and body["error"]["code"] == "VM.1010" and "Destroyed" in body["error"]["details"]
    await _capacity_exact(env)
    used = await env.core.db.fetchone("SELECT COUNT(*) FROM UsedIp WHERE usedFor='VmNic'")
    assert used[0] == 0


async def test_out_of_band_stop_reported_by_agent_events(env: Env) -> None:
    vm = (await env.create_vm("oob"))[1]["inventory"]
    agent = _agent(env, vm["hostUuid"])
    t0 = time.monotonic()
    guest = await agent.app[CTX].driver.host.lookup(vm["uuid"])
    await guest.destroy()   # what `virsh destroy` does, on the agent's private test-driver connection
    for _ in range(100):
        cur = await env.vm(vm["uuid"])
        if cur["state"] == "Stopped":
            break
        await asyncio.sleep(0.02)
    delay = time.monotonic() - t0
    print(f"out-of-band destroy → Stopped through the API in {delay * 1000:.0f} ms")
    assert cur["state"] == "Stopped" and cur["hostUuid"] is None, cur
    await _capacity_exact(env)
    # a stale Running report for a host the VM is not on while it is Stopped → Running there (tracer table)
    st = await env.inv("StartVmInstance", uuid=vm["uuid"])
    assert st["state"] == "Running"
    await _capacity_exact(env)


async def test_failed_create_leaves_nothing(env: Env, tmp_path: Path) -> None:
    (tmp_path / "gone.qcow2").write_bytes(b"QFI\xfb")
    bad = await env.inv("AddImage", name="missing", url=f"file://{tmp_path}/gone.qcow2", format="qcow2")
    (tmp_path / "gone.qcow2").unlink()  # the hosts' copy fails
    status, body = await env.raw("CreateVmInstance", name="bad", instanceOfferingUuid=env.ids["offering"],
                                 imageUuid=bad["uuid"], l3NetworkUuids=[env.ids["l3"]])
    assert status >= 400 and not body["success"], body
    assert (await env.core.db.fetchone("SELECT COUNT(*) FROM VmInstance"))[0] == 0
    assert (await env.core.db.fetchone("SELECT COUNT(*) FROM UsedIp WHERE usedFor='VmNic'"))[0] == 0
    assert (await env.core.db.fetchone("SELECT COUNT(*) FROM Volume"))[0] == 0
    await _capacity_exact(env)
    for a in env.agents:
        assert await _domains(a) == {}


async def test_fifty_concurrent_creates_never_overcommit(env: Env) -> None:
    # 2 hosts × 4 CPUs × 2000 MHz = 16 VMs of 1000 MHz (memory: 7.5 GiB → 7 VMs of 1 GiB per host = 14).
    # The simulated hosts share one filesystem, hence one image cache: warm it once per host first (real
    # hosts have their own disks; two agents filling the same cache file at once is not a real case).
    for h in await env.hosts():
        assert (await env.create_vm(f"warm-{h['name']}", hostUuid=h["uuid"]))[0] == 200
    results = await asyncio.gather(*(env.create_vm(f"c{i}") for i in range(50)))
    ok = [b for s, b in results if s == 200]
    failed = [b for s, b in results if s != 200]
    assert len(ok) == 12, [b["error"] for b in failed][:3]
    assert all(b["error"]["code"] == "SYS.1006" for b in failed)
    hosts = await env.hosts()
    assert all(h["availableMemoryCapacity"] >= 0 and h["availableCpuCapacity"] >= 0 for h in hosts)
    await _capacity_exact(env)
    running = sum([len(await _domains(a)) for a in env.agents])
    assert running == 14 and len(await env.core.db.fetchall("SELECT uuid FROM VmInstance")) == 14


async def test_agent_event_needs_host_token(env: Env) -> None:
    r = await env.client.post("/v1/agent/events", json={"hostUuid": "x", "vmUuid": "y", "vmState": "Stopped"},
                              headers={"Authorization": "Bearer wrong-token"})
    assert r.status == 401



async def _until(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await probe()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_ping_disconnects_then_auto_reconnects_and_syncs(env: Env, tmp_path: Path) -> None:
    for name, value in (("ping.interval", "1"), ("ping.timeout", "1"), ("ping.maxFailure", "2")):
        await env.call("UpdateGlobalConfig", category="host", name=name, value=value)
    vm = (await env.create_vm("p"))[1]["inventory"]
    agent = _agent(env, vm["hostUuid"])
    await agent.runner.cleanup()            # the agent dies (its test-driver domains die with it)
    env.agents.remove(agent)

    async def host_status() -> str:
        return next(h for h in await env.hosts() if h["uuid"] == vm["hostUuid"])["status"]

    await _until(lambda: _is(host_status, "Disconnected"), 15, "host Disconnected after failed pings")
    assert (await env.vm(vm["uuid"]))["state"] == "Unknown"
    again = await start_agent(tmp_path / "agents2", agent.ip, env.url, host_uuid=agent.config.host_uuid,
                              token=agent.config.token)
    env.agents.append(again)
    await _until(lambda: _is(host_status, "Connected"), 15, "auto-reconnect")
    cur = await env.vm(vm["uuid"])  # the restarted host has no such domain: the sync stops the VM
    assert cur["state"] == "Stopped" and cur["hostUuid"] is None, cur
    await _capacity_exact(env)


async def _is(probe: Any, value: str) -> bool:
    return bool(await probe() == value)
