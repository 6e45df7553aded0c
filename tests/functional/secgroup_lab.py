"""A controller (in process, fresh database) and real in-process agents whose security-group applier works
on private "host" namespaces (root). Used by test_secgroup_push and scripts/bench/secgroup_bench.py."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from apiclient import Api

from controller.api.http import CORE
from controller.app import create_app as controller_app
from controller.config import ControllerConfig
from controller.util import new_uuid, now_iso
from kvmagent.config import AgentConfig
from kvmagent.driver.libvirt_driver import LibvirtDriver
from kvmagent.driver.testnode import write_node_xml
from kvmagent.secgroup import SecurityGroupService
from kvmagent.server import create_app as agent_app
from kvmagent.server import wait_ready


@dataclass
class Agent:
    host_uuid: str
    server: TestServer
    app: web.Application
    secgroup: SecurityGroupService


@dataclass
class Lab:
    api: Api
    core: Any
    tmp: Path
    agents: list[Agent] = field(default_factory=list)
    l3: str = ""
    sg_provider: str = ""
    n: int = 0

    async def network(self) -> None:
        zone = (await self.api.inv("CreateZone", name="z"))["uuid"]
        self.cluster = (await self.api.inv("CreateCluster", name="c", zoneUuid=zone, hypervisorType="KVM"))["uuid"]
        self.zone = zone
        l2 = await self.api.inv("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone, physicalInterface="eth0")
        self.l3 = (await self.api.inv("CreateL3Network", name="l3", l2NetworkUuid=l2["uuid"]))["uuid"]
        [p] = await self.api.query("QueryNetworkServiceProvider", ("type", "=", "SecurityGroup"))
        await self.api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=self.l3,
                            networkServices={p["uuid"]: ["SecurityGroup"]})

    async def agent(self, host_netns: str | None, *, index: int) -> Agent:
        """A real agent (libvirt test driver) on 127.0.0.<index+1>, registered as a Connected host."""
        host_uuid = uuid.uuid4().hex
        sd = self.tmp / host_uuid
        uri = await asyncio.to_thread(write_node_xml, sd / "node.xml")
        token = secrets.token_hex(16)
        ip = f"127.0.{index // 250}.{index % 250 + 1}"
        config = AgentConfig(host_uuid=host_uuid, token=token, controller_url=None, listen_ip=ip, port=0,
                             libvirt_uri=uri, state_dir=sd, log_dir=sd / "log")
        sg = SecurityGroupService(sd / "sg", host_netns=host_netns, interval=3600)
        app = agent_app(config, driver=LibvirtDriver(uri, state_dir=sd), secgroup=sg)
        server = TestServer(app, host=ip, port=0)
        await server.start_server()
        async with asyncio.timeout(30):
            await wait_ready(app)
        async with self.core.db.write() as tx:
            await tx.insert("Host", {"uuid": host_uuid, "name": f"h{index}", "zoneUuid": self.zone,
                                     "clusterUuid": self.cluster, "managementIp": ip, "status": "Connected",
                                     "agentPort": server.port, "agentToken": token, "createDate": now_iso(),
                                     "lastOpDate": now_iso()})
        a = Agent(host_uuid, server, app, sg)
        self.agents.append(a)
        return a

    async def vm(self, host: str, *, ip: str, mac: str, tap: str) -> tuple[str, str]:
        self.n += 1
        vm, nic = new_uuid(), new_uuid()
        async with self.core.db.write() as tx:
            await tx.insert("VmInstance", {"uuid": vm, "name": f"vm{self.n}", "internalId": 5000 + self.n,
                                           "memorySize": 1, "cpuNum": 1, "cpuSpeed": 1, "hostUuid": host,
                                           "state": "Running", "createDate": now_iso(), "lastOpDate": now_iso()})
            await tx.insert("VmNic", {"uuid": nic, "vmInstanceUuid": vm, "l3NetworkUuid": self.l3, "ip": ip,
                                      "mac": mac, "internalName": tap, "deviceId": 0, "createDate": now_iso(),
                                      "lastOpDate": now_iso()})
        return vm, nic

    async def state(self, host: str) -> dict[str, Any]:
        row = await self.core.db.fetchone("SELECT * FROM SecurityGroupHostState WHERE hostUuid=?", (host,))
        return dict(row) if row else {}


@asynccontextmanager
async def running_lab(tmp: Path) -> AsyncIterator[Lab]:
    app = controller_app(ControllerConfig(db_path=str(tmp / "controller.db"), log_dir=str(tmp / "log")))
    async with TestClient(TestServer(app)) as client:
        api = Api(client)
        await api.login()
        lab = Lab(api, app[CORE], tmp)
        await lab.network()
        try:
            yield lab
        finally:
            for a in lab.agents:
                await a.server.close()
