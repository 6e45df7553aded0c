"""Agents upgraded on reconnect, against real in-process agents: a host added over SSH whose agent reports another
release than the controller's is redeployed (``deploy(force=True)``) during ReconnectHost and must come back
with the controller's release; its VM keeps running (same domain, never restarted); an agent that stays old
after the redeploy leaves the host Disconnected with an error naming both releases; at start, the controller
finds the Connected SSH hosts whose recorded agent differs and reconnects them.

The SSH deploy itself (``controller.compute.deploy.deploy``: wheel upload, pip install, agent restart) needs a
real host and runs in the e2e tier; here it is replaced by a recorder whose forced run does what the reinstall
does to the in-process agent (it then reports the controller's release)."""

from __future__ import annotations

from typing import Any

import pytest
from test_controller_compute import Env, _agent, _domains

from controller.compute import agent_upgrade, deploy
from controller.version import VERSION
from kvmagent.handlers import host as agent_host


async def _host(env: Env, uuid: str) -> dict[str, Any]:
    return (await env.call("QueryHost", conditions=[{"name": "uuid", "op": "=", "value": uuid}]))["inventories"][0]


def _recorder(env: Env, monkeypatch: pytest.MonkeyPatch, fixes: bool = True) -> list[bool]:
    calls: list[bool] = []

    async def fake_deploy(core: Any, host: dict[str, Any], *, new: bool, accept: str | None = None,
                          force: bool = False) -> str:
        calls.append(force)
        if force and fixes:
            monkeypatch.setattr(agent_host, "RELEASE", VERSION)  # the reinstalled, restarted agent
        return env.url

    monkeypatch.setattr(deploy, "deploy", fake_deploy)
    return calls


async def _ssh_host(env: Env, uuid: str) -> None:
    async with env.core.db.write() as tx:  # as if added with AddKvmHost (its password is what marks it)
        await tx.execute("UPDATE Host SET password='sealed:test' WHERE uuid=?", (uuid,))


async def test_outdated_agent_redeployed_on_reconnect_vm_keeps_running(env: Env,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    status, body = await env.create_vm("keeps-running")
    assert status == 200, body
    vm = body["inventory"]
    uuid = vm["hostUuid"]
    agent = _agent(env, uuid)
    domain_before = (await _domains(agent))[vm["uuid"]]
    await _ssh_host(env, uuid)
    monkeypatch.setattr(agent_host, "RELEASE", "0.1.9")  # the host still runs the previous release's agent
    calls = _recorder(env, monkeypatch)
    await env.call("ReconnectHost", uuid=uuid)
    assert calls == [False, True]  # deploy-if-changed, then the forced redeploy
    h = await _host(env, uuid)
    assert h["status"] == "Connected" and h["agentVersion"] == VERSION
    assert (await env.vm(vm["uuid"]))["state"] == "Running"
    assert (await _domains(agent))[vm["uuid"]] == domain_before


async def test_agent_still_old_after_redeploy_is_disconnected(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    uuid = env.agents[0].config.host_uuid
    await _ssh_host(env, uuid)
    monkeypatch.setattr(agent_host, "RELEASE", "0.1.9")
    calls = _recorder(env, monkeypatch, fixes=False)
    status, body = await env.raw("ReconnectHost", uuid=uuid)
    assert status == 502 and body["error"]["code"] == "HOST.1002", body
    details = body["error"]["details"]
    assert "reports release 0.1.9" in details and f"the controller deploys {VERSION}" in details, details
    assert "even after redeploying it" in details and calls == [False, True]
    assert (await _host(env, uuid))["status"] == "Disconnected"


async def test_start_reconnects_hosts_whose_agent_differs(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    old, current = (a.config.host_uuid for a in env.agents[:2])
    for u in (old, current):
        await _ssh_host(env, u)
    async with env.core.db.write() as tx:  # what the agent reported to the controller before its upgrade
        await tx.execute("UPDATE Host SET agentVersion='0.1.9' WHERE uuid=?", (old,))
    assert await agent_upgrade.outdated_hosts(env.core) == [old]
    calls = _recorder(env, monkeypatch)
    assert await agent_upgrade.upgrade_agents(env.core) == []
    assert calls == [False]  # the agent already reports the controller's release: deploy-if-changed was enough
    assert (await _host(env, old))["agentVersion"] == VERSION
    assert await agent_upgrade.outdated_hosts(env.core) == []
