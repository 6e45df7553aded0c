"""Any order of building a cloud (issue 18, reliability 2), over in-process agents (libvirt test driver, real
StorageService/qemu-img): hosts added, L2 attached and local primary storage attached in every order give the
same hosts (each initialised its local storage, its capacity recorded) and a VM starts on each host at once.
Detach undoes the attach and attaching again redoes it; an L2 whose bridge a Connected host lacks is refused
(naming the host and the bridge) and leaves nothing attached; a host connecting while the storage is attached
ends initialised either way."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_controller_compute import Env, GiB, SimAgent, _capacity_exact, start_agent

from controller.app import create_app
from controller.compute.hosts import add_connected_host
from controller.config import ControllerConfig
from kvmagent.server import CTX
from zsutil.runner import run

STEPS = ("hosts", "l2", "ps")


@pytest.fixture
async def bare(tmp_path: Path) -> AsyncIterator[Env]:
    """A controller with records only (nothing attached, no host); agents are started by the steps."""
    # images are recorded from files here (no backup storage): the lab-only setting, as in test_controller_compute
    cfg = ControllerConfig(db_path=str(tmp_path / "c.db"), log_dir=str(tmp_path / "log"), allow_host_local_images=True,
                           image_import_dirs=[str(tmp_path)])
    server = TestServer(create_app(cfg), host="127.0.0.1")
    async with TestClient(server) as client:
        e = Env(client, f"http://127.0.0.1:{server.port}")
        await e.login()
        zone = await e.inv("CreateZone", name="z")
        cluster = await e.inv("CreateCluster", name="c", zoneUuid=zone["uuid"], hypervisorType="KVM")
        l2 = await e.inv("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
        l3 = await e.inv("CreateL3Network", name="l3", l2NetworkUuid=l2["uuid"])
        await e.call("AddIpRange", l3NetworkUuid=l3["uuid"], name="r", startIp="10.20.0.10", endIp="10.20.0.250",
                     netmask="255.255.255.0", gateway="10.20.0.1")
        ps = await e.inv("AddLocalPrimaryStorage", name="ls", zoneUuid=zone["uuid"], url=str(tmp_path / "ps"))
        off = await e.inv("CreateInstanceOffering", name="small", cpuNum=1, cpuSpeed=1000, memorySize=GiB)
        img = tmp_path / "img.qcow2"
        await run(["qemu-img", "create", "-f", "qcow2", str(img), "64M"], timeout=30)
        image = await e.inv("AddImage", name="tiny", url=f"file://{img}", format="qcow2")
        e.ids = {"zone": zone["uuid"], "cluster": cluster["uuid"], "l2": l2["uuid"], "l3": l3["uuid"],
                 "ps": ps["uuid"], "offering": off["uuid"], "image": image["uuid"], "tmp": str(tmp_path)}
        try:
            yield e
        finally:
            for a in e.agents:
                await a.runner.cleanup()


async def _add_hosts(env: Env, n: int = 2) -> None:
    for i in range(n):
        a = await start_agent(Path(env.ids["tmp"]) / "agents", f"127.0.9.{31 + len(env.agents)}", env.url)
        env.agents.append(a)
        await add_connected_host(env.core, name=f"h{i}", cluster_uuid=env.ids["cluster"], ip=a.ip, port=7070,
                                 token=a.config.token, controller_url=env.url, uuid=a.config.host_uuid)


async def _step(env: Env, step: str) -> None:
    if step == "hosts":
        await _add_hosts(env)
    elif step == "l2":
        await env.call("AttachL2NetworkToCluster", l2NetworkUuid=env.ids["l2"], clusterUuid=env.ids["cluster"])
    else:
        await env.call("AttachPrimaryStorageToCluster", primaryStorageUuid=env.ids["ps"],
                       clusterUuid=env.ids["cluster"])


async def _host_refs(env: Env) -> dict[str, tuple[int, int]]:
    rows = await env.core.db.fetchall("SELECT hostUuid, totalCapacity, availableCapacity FROM LocalStorageHostRef "
                                      "WHERE primaryStorageUuid=?", (env.ids["ps"],))
    return {r["hostUuid"]: (r["totalCapacity"], r["availableCapacity"]) for r in rows}


def _initialised(agent: SimAgent, ps_url: str) -> bool:
    storage = agent.app[CTX].storage
    try:
        storage.local(ps_url)
    except Exception:
        return False
    return True


async def _state_of_hosts(env: Env) -> None:
    """Every host as a host joining a finished cloud: local storage initialised there (agent and DB), capacity
    recorded, the PS totals the sum of its hosts; then a VM starts on each host."""
    url = str(Path(env.ids["tmp"]) / "ps")
    refs = await _host_refs(env)
    assert set(refs) == {a.config.host_uuid for a in env.agents}, refs
    assert all(total > 0 and avail == total for total, avail in refs.values()), refs
    assert all(_initialised(a, url) for a in env.agents)
    ps = (await env.call("QueryPrimaryStorage", conditions=[]))["inventories"][0]
    assert ps["totalCapacity"] == sum(t for t, _ in refs.values())
    for a in env.agents:
        status, body = await env.create_vm(f"first-on-{a.ip}", hostUuid=a.config.host_uuid)
        assert status == 200 and body["inventory"]["state"] == "Running", body
    await _capacity_exact(env)
    assert (await env.call("CheckConsistency"))["findings"] == []


@pytest.mark.parametrize("order", list(itertools.permutations(STEPS)), ids=lambda o: "-".join(o))
async def test_every_build_order_gives_the_same_hosts(bare: Env, order: tuple[str, ...]) -> None:
    for step in order:
        await _step(bare, step)
    await _state_of_hosts(bare)


async def test_detach_undoes_and_reattach_redoes(bare: Env) -> None:
    for step in ("hosts", "l2", "ps"):
        await _step(bare, step)
    ids = bare.ids
    await bare.call("DetachPrimaryStorageFromCluster", primaryStorageUuid=ids["ps"], clusterUuid=ids["cluster"])
    assert await _host_refs(bare) == {}  # as for a host that joined a cluster without it
    ps = (await bare.call("QueryPrimaryStorage", conditions=[]))["inventories"][0]
    assert ps["totalCapacity"] == 0 and ps["attachedClusterUuids"] == []
    await bare.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ids["ps"], clusterUuid=ids["cluster"])
    await _state_of_hosts(bare)
    # a volume on a host keeps that host's ref (and its capacity) through a detach
    await bare.call("DetachPrimaryStorageFromCluster", primaryStorageUuid=ids["ps"], clusterUuid=ids["cluster"])
    held = {r["hostUuid"] for r in await bare.core.db.fetchall("SELECT hostUuid FROM LocalStorageResourceRef")}
    assert set(await _host_refs(bare)) == held and held


async def test_l2_without_bridge_on_a_connected_host_is_refused(bare: Env) -> None:
    await _add_hosts(bare, 1)
    l2 = await bare.inv("CreateL2NoVlanNetwork", name="nobr", zoneUuid=bare.ids["zone"], physicalInterface="eth9")
    status, body = await bare.raw("AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"],
                                  clusterUuid=bare.ids["cluster"])
    assert status == 409 and "br_eth9" in body["error"]["details"], body
    assert bare.agents[0].ip in body["error"]["details"], body
    ref = await bare.core.db.fetchone("SELECT COUNT(*) FROM L2NetworkClusterRef WHERE l2NetworkUuid=?", (l2["uuid"],))
    assert ref[0] == 0


async def test_a_host_failing_init_fails_the_attach_and_leaves_nothing(bare: Env, tmp_path: Path) -> None:
    await _add_hosts(bare, 2)
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    ps = await bare.inv("AddLocalPrimaryStorage", name="bad", zoneUuid=bare.ids["zone"], url=str(blocker / "ps"))
    status, body = await bare.raw("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"],
                                  clusterUuid=bare.ids["cluster"])
    assert status == 409 and bare.agents[0].ip in body["error"]["details"], body
    assert (await bare.core.db.fetchone("SELECT COUNT(*) FROM PrimaryStorageClusterRef"))[0] == 0
    assert (await bare.core.db.fetchone("SELECT COUNT(*) FROM LocalStorageHostRef"))[0] == 0


async def test_host_connecting_while_storage_is_attached(bare: Env) -> None:
    """The attach lands while a host's connect sequence runs, after it read the cluster's storages (held at its
    VM sync): the attach skips the not yet Connected host, and the connect sequence initialises it."""
    await _step(bare, "l2")
    a = await start_agent(Path(bare.ids["tmp"]) / "agents", "127.0.9.41", bare.url)
    bare.agents.append(a)
    driver = a.app[CTX].driver
    held, go = asyncio.Event(), asyncio.Event()
    list_vms = driver.list_vms

    async def slow_list_vms() -> Any:
        held.set()
        await go.wait()
        return await list_vms()

    driver.list_vms = slow_list_vms
    connect = asyncio.create_task(add_connected_host(
        bare.core, name="late", cluster_uuid=bare.ids["cluster"], ip=a.ip, port=7070, token=a.config.token,
        controller_url=bare.url, uuid=a.config.host_uuid))
    await asyncio.wait_for(held.wait(), 10)
    await _step(bare, "ps")
    assert await _host_refs(bare) == {}  # the host was not Connected yet: left to its connect sequence
    go.set()
    await connect
    driver.list_vms = list_vms
    await _state_of_hosts(bare)
