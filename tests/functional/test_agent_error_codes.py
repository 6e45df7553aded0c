"""Issue #18: the agent has one coded-error base (``zsutil.errors.CodedError``) mapped to HTTP in one place, so
an error from each area (the hypervisor driver, ``storage``, ``flatnet``) reaches the controller's agent client
with its own code and HTTP status. Before, ``flatnet``'s release handlers did not map its errors at all: a
release that failed half-way (the L2 bridge gone) came back as ``500 AGENT.INTERNAL``.

The real agent application (test:/// driver, real ``StorageService``, real ``FlatNetService`` in the test's
namespaces) answers the controller's real client (``controller.compute.agents.Agents``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from flatnet_env import Env, flatnet_env_fixture  # noqa: F401  (fixture)

from controller.compute.agents import Agents
from controller.errors import AgentFailure
from flatnet.model import L3Spec
from kvmagent.config import AgentConfig
from kvmagent.contract import flatnet as fc
from kvmagent.contract import storage as sc
from kvmagent.contract import vm as vc
from kvmagent.contract.base import AgentRequest
from kvmagent.driver.libvirt_driver import LibvirtDriver
from kvmagent.driver.testnode import write_node_xml
from kvmagent.server import create_app, wait_ready
from storage.service import StorageService

TOKEN = "error-codes-token-0123456789"


@asynccontextmanager
async def agent_host(env: Env) -> AsyncIterator[dict[str, Any]]:
    """The agent app on loopback; yields the Host row the controller's client needs."""
    tmp = env.tmp
    uri = write_node_xml(tmp / "node.xml")
    config = AgentConfig(host_uuid=uuid.uuid4().hex, token=TOKEN, listen_ip="127.0.0.1", port=0, libvirt_uri=uri,
                         state_dir=tmp / "agent", log_dir=tmp / "log")
    app = create_app(config, driver=LibvirtDriver(uri, state_dir=config.state_dir, poll_interval=0.05),
                     flatnet=env.service(), storage=StorageService(tmp / "storage-state"))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with asyncio.timeout(60):
            await wait_ready(app)
        yield {"uuid": config.host_uuid, "managementIp": "127.0.0.1", "agentPort": server.port,
               "agentToken": TOKEN}
    finally:
        await server.close()


async def failure(agents: Agents, host: dict[str, Any], cmd: AgentRequest) -> dict[str, Any]:
    with pytest.raises(AgentFailure) as exc:
        await agents.call(host, cmd, timeout=60)
    assert exc.value.cause is not None
    return exc.value.cause


def flat_l3(l3: L3Spec) -> fc.FlatL3:
    return fc.FlatL3(l3NetworkUuid=l3.uuid, bridgeName=l3.bridge, physicalInterface=l3.uplink,
                     dhcpServerIp=str(l3.dhcp_ip), netmask=str(l3.netmask), gateway=l3.gateway,
                     dns=[str(d) for d in l3.dns], dnsDomain=l3.dns_domain, antiSpoofing=l3.anti_spoofing)


async def test_an_error_of_each_area_reaches_the_controller_with_its_code_and_status(env: Env,
                                                                                     tmp_path: Path) -> None:
    agents = Agents(retries=0)
    try:
        async with agent_host(env) as host:
            # the hypervisor driver (AgentError)
            vm = uuid.uuid4().hex
            cause = await failure(agents, host, vc.RebootVmCmd(uuid=vm))
            assert (cause["code"], cause["httpStatus"]) == ("VM.NOT_FOUND", 404), cause
            assert vm in cause["description"]

            # storage (StorageError)
            ps = tmp_path / "never-initialised"
            cause = await failure(agents, host, sc.CapacityCmd(storagePath=str(ps)))
            assert (cause["code"], cause["httpStatus"]) == ("STORAGE.NOT_FOUND", 404), cause
            assert cause["details"]["details"] == {"field": "storagePath", "value": str(ps)}

            # flatnet (FlatNetError), through a handler that mapped it before
            l3 = env.l3()
            cause = await failure(agents, host, fc.FlatUserdataApplyCmd(vmUuid="vm-x", l3NetworkUuid=l3.uuid,
                                                                        vmIp="10.77.0.11"))
            assert (cause["code"], cause["httpStatus"]) == ("NET.L3_NOT_PREPARED", 409), cause

            # flatnet, through a release handler that did not map it: the L2 bridge vanished under the L3
            guest = await env.add_vm("errs")
            nic = fc.FlatNic(vmUuid="vm-errs", l3NetworkUuid=l3.uuid, mac=guest.mac, ip="10.77.0.11",
                             netmask="255.255.255.0", gateway="10.77.0.1", hostname="errs", tapName=guest.tap)
            await agents.call(host, fc.FlatDhcpApplyCmd(l3s=[flat_l3(l3)], nics=[nic]), timeout=60)
            await env.host_cmd("ip", "link", "del", "br0")
            cause = await failure(agents, host, fc.FlatDhcpReleaseCmd(
                nics=[fc.FlatNicRef(l3NetworkUuid=l3.uuid, mac=guest.mac)]))
            assert (cause["code"], cause["httpStatus"]) == ("NET.BRIDGE_NOT_FOUND", 404), cause
            assert "br0" in cause["description"]
    finally:
        await agents.close()
