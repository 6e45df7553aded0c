"""Agent TLS on the testbed (issue 18, security 10): AddKvmHost over SSH ships a certificate from the
controller's CA; the agent then answers only HTTPS with it, its key is private on the host, the events
channel reaches the controller over TLS, ReconnectHost keeps a good certificate and replaces one that no
longer matches the CA."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from lab import Testbed, TinyImage, reset_host
from test_compute import Ctl, _domstate, running_controller

from controller.api.http import CORE
from kvmagent.contract.tls import client_context

TLS_DIR = "/etc/zstack-py/tls"


@pytest.fixture
async def ctl(testbed: Testbed, tiny: TinyImage) -> AsyncIterator[Ctl]:
    async with running_controller("agent-tls", tiny) as c:
        try:
            yield c
        finally:
            for h in testbed.hosts:
                reset_host(h)


async def _status(url: str, tls: object, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(trust_env=False) as s, s.get(
            url, ssl=tls, headers=headers, timeout=aiohttp.ClientTimeout(total=15)) as r:
        return r.status


async def test_agent_serves_tls_with_the_controllers_ca(testbed: Testbed, ctl: Ctl) -> None:
    h = testbed.hosts[0]
    inv = await ctl.add_host(h)
    assert inv["status"] == "Connected", inv
    core = ctl.client.app[CORE]
    row = await core.db.fetchone("SELECT agentTls, agentToken FROM Host WHERE uuid=?", (inv["uuid"],))
    assert row["agentTls"] == 1
    # on the host: private key and directory, the config points at them and at the https events listener
    modes = h.run("stat", "-c", "%a %n", TLS_DIR, f"{TLS_DIR}/agent.key", f"{TLS_DIR}/agent.crt").stdout.split("\n")
    assert modes[0].startswith("700 ") and modes[1].startswith("600 ") and modes[2].startswith("600 "), modes
    config = h.run("cat", "/etc/zstack-py/kvmagent.yaml").stdout
    assert f"tls_key: {TLS_DIR}/agent.key" in config and "controller_url: https://" in config, config
    # the agent: pinned CA works (and still wants the token), no CA / plain HTTP do not
    pinned = client_context(ca_pem=core.services["tls"].ca.cert_pem)
    base = f"https://{h.ip}:7070"
    assert await _status(base + "/readyz", pinned, row["agentToken"]) == 200
    assert await _status(base + "/readyz", pinned) == 401
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _status(base + "/healthz", True)
    with pytest.raises(aiohttp.ClientError):
        await _status(f"http://{h.ip}:7070/healthz", False)

    # events over TLS: a domain destroyed behind the controller's back is reported at once
    vm = await ctl.inv("CreateVmInstance", name="tls-vm", instanceOfferingUuid=ctl.ids["offering"],
                       imageUuid=ctl.ids["image"], l3NetworkUuids=[ctl.ids["l3"]])
    assert vm["state"] == "Running" and _domstate(h, vm["uuid"]) == "running"
    await asyncio.sleep(12)  # the agent swallows its own start's events for its judger TTL (10 s)
    h.run("virsh", "-c", "qemu:///system", "destroy", vm["uuid"])
    deadline = time.monotonic() + 60  # reported at once; the bound is for a loaded machine
    while time.monotonic() < deadline:
        if (await ctl.vm(vm["uuid"]))["state"] == "Stopped":
            break
        await asyncio.sleep(0.2)
    assert (await ctl.vm(vm["uuid"]))["state"] == "Stopped"
    await ctl.inv("DestroyVmInstance", uuid=vm["uuid"])

    # ReconnectHost keeps a good certificate ...
    cert = h.run("cat", f"{TLS_DIR}/agent.crt").stdout
    assert (await ctl.inv("ReconnectHost", uuid=inv["uuid"]))["status"] == "Connected"
    assert h.run("cat", f"{TLS_DIR}/agent.crt").stdout == cert
    # ... and replaces one that does not come from this CA (a host moved from another controller)
    h.run("sh", "-c", f"cp {TLS_DIR}/agent.crt {TLS_DIR}/ca.crt")
    assert (await ctl.inv("ReconnectHost", uuid=inv["uuid"]))["status"] == "Connected"
    assert h.run("cat", f"{TLS_DIR}/agent.crt").stdout != cert
    assert h.run("cat", f"{TLS_DIR}/ca.crt").stdout.encode() == core.services["tls"].ca.cert_pem
    assert await _status(base + "/readyz", pinned, row["agentToken"]) == 200
