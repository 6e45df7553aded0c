"""Agent release / protocol level / source digest at connect, against real in-process agents: reported and
shown in the host inventory; an agent one protocol level behind connects flagged agentUpgradeNeeded; two levels
behind is refused (ReconnectHost: Disconnected, error naming both levels; AddKvmHost-style: no host row)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_controller_compute import Env, start_agent

from controller.compute.deploy import agent_digest
from controller.compute.hosts import add_connected_host
from controller.version import PROTOCOL_LEVEL, VERSION
from kvmagent.handlers import host as agent_host


async def _host(env: Env, uuid: str) -> dict:
    return (await env.call("QueryHost", conditions=[{"name": "uuid", "op": "=", "value": uuid}]))["inventories"][0]


async def test_versions_reported_and_shown(env: Env) -> None:
    for h in await env.hosts():
        assert h["status"] == "Connected"
        assert h["agentVersion"] == VERSION and h["agentProtocol"] == PROTOCOL_LEVEL
        assert h["agentDigest"] == agent_digest() and h["agentUpgradeNeeded"] is False
    version = await env.raw("GetVersion", session=False)
    assert version[0] == 200 and version[1]["agentProtocol"] == PROTOCOL_LEVEL and version[1]["version"] == VERSION


async def test_one_level_behind_accepted_and_flagged(env: Env, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    uuid = env.agents[0].config.host_uuid
    monkeypatch.setattr(agent_host, "PROTOCOL_LEVEL", PROTOCOL_LEVEL - 1)
    monkeypatch.setattr(agent_host, "RELEASE", "0.1.9")
    with caplog.at_level(logging.WARNING, logger="controller.compute.connect"):
        await env.call("ReconnectHost", uuid=uuid)
    h = await _host(env, uuid)
    assert h["status"] == "Connected" and h["agentUpgradeNeeded"] is True
    assert h["agentProtocol"] == PROTOCOL_LEVEL - 1 and h["agentVersion"] == "0.1.9"
    assert any("one behind" in r.getMessage() and uuid in r.getMessage() for r in caplog.records)
    other = await _host(env, env.agents[1].config.host_uuid)
    assert other["agentUpgradeNeeded"] is False
    # Upgraded: the next connect clears the flag.
    monkeypatch.undo()
    await env.call("ReconnectHost", uuid=uuid)
    h = await _host(env, uuid)
    assert h["agentUpgradeNeeded"] is False and h["agentProtocol"] == PROTOCOL_LEVEL


async def test_two_levels_behind_refused(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    uuid = env.agents[0].config.host_uuid
    monkeypatch.setattr(agent_host, "PROTOCOL_LEVEL", PROTOCOL_LEVEL - 2)
    status, body = await env.raw("ReconnectHost", uuid=uuid)
    assert status == 502 and body["error"]["code"] == "HOST.1002", body
    details = body["error"]["details"]
    assert f"protocol level {PROTOCOL_LEVEL - 2}" in details and f"controller level {PROTOCOL_LEVEL}" in details
    assert env.agents[0].ip in details
    h = await _host(env, uuid)
    assert h["status"] == "Disconnected"
    assert h["agentProtocol"] == PROTOCOL_LEVEL  # the refused connect recorded nothing
    # A new host whose agent is two levels behind is not added.
    a = await start_agent(tmp_path / "late", "127.0.9.21", env.url)
    env.agents.append(a)
    with pytest.raises(Exception, match=f"protocol level {PROTOCOL_LEVEL - 2}"):
        await add_connected_host(env.core, name="old", cluster_uuid=env.ids["cluster"], ip=a.ip, port=7070,
                                 token=a.config.token, controller_url=env.url, uuid=a.config.host_uuid)
    assert await env.core.db.fetchone("SELECT 1 FROM Host WHERE uuid=?", (a.config.host_uuid,)) is None
