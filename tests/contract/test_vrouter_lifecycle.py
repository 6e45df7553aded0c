"""The router's lifecycle against the real controller and real in-process host agents (libvirt test driver:
no QEMU, so no router image boots here; the e2e tier has the real router VM).

On each router domain's channel socket this test serves the real router agent (vrouter.agent: its HTTP
handler, trust-on-first-use init, bearer token, identity file, code push) as the router's QEMU would. Only its
data plane is not run: what ``/apply`` would configure is rendered with vrouter.render (the calls
Router.apply makes) and recorded. Checked: the router of a DHCP/DNS L3 is created on demand and gets each
VM NIC's static lease pushed on start/stop; the health check finds a healthy router ``ok``, reconnects an
agent that forgot its identity, pushes the controller's agent code to an agent running other code (which
restarts with it), and re-creates a stopped router by itself; DestroyVmInstance of a router is Direct
whatever ``vm/deletionPolicy`` says.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from test_controller_compute import Env

from controller.vrouter_provider import health
from controller.vrouter_provider.router import agent_code
from kvmagent.driver.xml.channel import channel_socket
from kvmagent.handlers import vrouter as relay
from vrouter import agent, render
from vrouter.contract import code_files
from zsutil.runner import run

MiB = 1 << 20


class _Stream:
    def __init__(self, conn: socket.socket, router: agent.Router) -> None:
        self.rfile = conn.makefile("rb")
        self.wfile = conn.makefile("wb", buffering=0)
        self.router = router


class RecordingRouter(agent.Router):
    """The agent's Router; ``apply`` renders (validating the pushed state as the router would) and records
    instead of configuring interfaces, nftables and dnsmasq."""

    def __init__(self, served: ServedRouter, state_dir: Path | None) -> None:
        super().__init__(state_dir, package=served.package)
        self.served = served

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        gen = state.get("generation")
        if not isinstance(gen, int) or gen < 0:
            raise render.StateError(f"generation: {gen!r} is not a non-negative integer")
        names = {str(n["mac"]).lower(): f"eth{i}" for i, n in enumerate(state.get("nics", []))}
        render.nic_plan(state, names)
        render.nft_ruleset(state, names)
        self.served.applied.append((state, render.dnsmasq_files(state, names)))
        self.generation = gen
        self._save()
        return {"generation": gen}

    def restart(self) -> None:   # busybox init respawning the agent: a new process, same files
        self.served.router = RecordingRouter(self.served, self.state_dir)


class ServedRouter:
    def __init__(self, sock: Path, home: Path) -> None:
        self.package = home / "vrouter"
        shutil.copytree(agent.PACKAGE, self.package, ignore=shutil.ignore_patterns("__pycache__"))
        self.state_dir = home / "run"
        self.applied: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.router = RecordingRouter(self, self.state_dir)
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(str(sock))
        self.srv.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                agent.Handler(None, ("channel", 0), _Stream(conn, self.router))  # type: ignore[arg-type]

    def close(self) -> None:
        self.srv.close()


class Routers:
    """Serves every router domain's channel as soon as its row exists (the router's QEMU binds it). The
    channel sockets live in a short directory (``sockets``): the agents' state directories under pytest's
    tmp_path are too long for a unix socket's path (108 bytes); the host relay is pointed there."""

    def __init__(self, env: Env, home: Path, sockets: Path) -> None:
        self.env, self.home, self.sockets = env, home, sockets
        self.served: dict[str, ServedRouter] = {}
        self.task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            for r in await self.env.core.db.fetchall("SELECT v.uuid, v.hostUuid FROM ApplianceVm a JOIN VmInstance "
                                                     "v ON v.uuid = a.uuid WHERE v.hostUuid IS NOT NULL"):
                if r["uuid"] not in self.served:
                    sock = channel_socket(self.sockets / r["hostUuid"][:8], r["uuid"])
                    sock.parent.mkdir(parents=True, exist_ok=True)
                    self.served[r["uuid"]] = ServedRouter(sock, self.home / r["uuid"])
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self.task.cancel()
        for s in self.served.values():
            s.close()


async def _router(env: Env) -> dict[str, Any]:
    (vr,) = await env.query("QueryVirtualRouterVm")
    return vr


async def test_router_dhcp_pushes_health_check_code_push_and_direct_destroy(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sockets = Path(tempfile.mkdtemp(prefix="zsvr", dir="/tmp"))

    def short_socket(state_dir: Path, vm_uuid: str) -> Path:   # a sim agent's state dir is .../<host uuid>
        return channel_socket(sockets / Path(state_dir).name[:8], vm_uuid)

    monkeypatch.setattr(relay, "channel_socket", short_socket)
    try:
        await _scenario(env, tmp_path, sockets)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


async def routed_l3(env: Env, tmp_path: Path) -> None:
    """The env's L3 takes DHCP and DNS from the VirtualRouter provider, with a router offering on a (blank)
    system image: the next VM start on it makes its router."""
    l3 = env.ids["l3"]
    await env.call("AddDnsToL3Network", l3NetworkUuid=l3, dns="10.10.0.53")
    (vrp,) = await env.query("QueryNetworkServiceProvider", ("type", "=", "VirtualRouter"))
    await env.call("AttachNetworkServiceToL3Network", l3NetworkUuid=l3, networkServices={vrp["uuid"]: ["DHCP", "DNS"]})
    img = tmp_path / "vr.qcow2"
    await run(["qemu-img", "create", "-f", "qcow2", str(img), "64M"], timeout=30)
    image = await env.inv("AddImage", name="vrouter", url=f"file://{img}", format="qcow2", system=True)
    await env.inv("CreateVirtualRouterOffering", name="vr", cpuNum=1, cpuSpeed=1000, memorySize=256 * MiB,
                  zoneUuid=env.ids["zone"], managementNetworkUuid=l3, imageUuid=image["uuid"])


async def _scenario(env: Env, tmp_path: Path, sockets: Path) -> None:
    l3 = env.ids["l3"]
    await routed_l3(env, tmp_path)
    routers = Routers(env, tmp_path / "routers", sockets)
    try:
        status, body = await env.create_vm("vm1")
        assert status == 200, body
        vm = body["inventory"]
        nic = vm["vmNics"][0]
        vr = await _router(env)
        assert (vr["state"], vr["status"], vr["vmNics"][0]["metaData"]) == ("Running", "Connected", "7"), vr
        served = routers.served[vr["uuid"]]
        state, files = served.applied[-1]
        assert state["dhcp"] == [{"nicMac": vr["vmNics"][0]["mac"], "mac": nic["mac"], "ip": nic["ip"], "prefix": 22,
                                  "gateway": "10.10.0.1", "dns": [vr["vmNics"][0]["ip"]]}], state
        assert state["dns"]["upstreams"] == ["10.10.0.53"]
        assert f"{nic['mac']},set:" in files["hosts.dhcp"] and f",{nic['ip']}," in files["hosts.dhcp"]
        await env.call("StopVmInstance", uuid=vm["uuid"])
        assert served.applied[-1][0]["dhcp"] == [], "the stopped VM's lease is still served"
        await env.call("StartVmInstance", uuid=vm["uuid"])
        assert [e["mac"] for e in served.applied[-1][0]["dhcp"]] == [nic["mac"]]

        assert await health.check(env.core, l3) == "ok"
        # the agent forgot who it is (a reboot clears /run): reconnected with the router's token
        served.router = RecordingRouter(served, None)
        assert await health.check(env.core, l3) == "reconnect"
        assert (await _router(env))["status"] == "Connected" and served.router.uuid == vr["uuid"]
        assert await health.check(env.core, l3) == "ok"
        # the agent runs other code: the controller's is pushed, the agent restarts with it
        (served.package / "render.py").write_text((served.package / "render.py").read_text() + "# older\n")
        served.router = RecordingRouter(served, served.state_dir)
        assert served.router.digest != agent_code()[1]
        assert await health.check(env.core, l3) == "upgrade"
        assert code_files(served.package) == agent_code()[0] and served.router.digest == agent_code()[1]
        assert await health.check(env.core, l3) == "ok"

        # the router VM stopped: the health check re-creates it (a new VM), with the VM's lease
        await env.call("StopVmInstance", uuid=vr["uuid"])
        assert (await _router(env))["status"] == "Disconnected"
        assert await health.check(env.core, l3) == "recreate"
        new = await _router(env)
        assert new["uuid"] != vr["uuid"] and (new["state"], new["status"]) == ("Running", "Connected"), new
        assert [e["mac"] for e in routers.served[new["uuid"]].applied[-1][0]["dhcp"]] == [nic["mac"]]
        assert await env.core.db.fetchone("SELECT 1 FROM VmInstance WHERE uuid=?", (vr["uuid"],)) is None

        # DestroyVmInstance of a router is Direct even when the policy keeps other VMs Destroyed
        await env.call("UpdateGlobalConfig", category="vm", name="deletionPolicy", value="Delay")
        await env.call("DestroyVmInstance", uuid=new["uuid"])
        assert await env.query("QueryVirtualRouterVm") == []
        for table in ("VmInstance", "ApplianceVm"):
            assert await env.core.db.fetchone(f"SELECT 1 FROM {table} WHERE uuid=?", (new["uuid"],)) is None
        assert await env.core.db.fetchone("SELECT 1 FROM UsedIp WHERE ip=?", (new["vmNics"][0]["ip"],)) is None
        assert await health.check(env.core, l3) == "gone"
    finally:
        routers.close()
