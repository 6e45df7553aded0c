"""The router health check's decision (controller/vrouter_provider/health.py) for every case, and its
global config (1.0's name ``virtualRouter/ping.interval``)."""

from __future__ import annotations

from typing import Any

import pytest
from apiclient import Api

from controller.vrouter_provider.health import verdict
from controller.vrouter_provider.router import agent_code

DIGEST = agent_code()[1]
UP = {"status": "Connected"}
DOWN = {"status": "Disconnected"}


def _vr(state: str = "Running", status: str = "Connected", generation: int = 4) -> dict[str, Any]:
    return {"uuid": "r" * 32, "state": state, "status": status, "generation": generation}


def _ping(**over: Any) -> dict[str, Any]:
    return {"uuid": "r" * 32, "version": "0.1.0", "generation": 4, "digest": DIGEST, **over}


@pytest.mark.parametrize("vr, host, ping, expected", [
    (_vr(), UP, _ping(), "ok"),
    (_vr(status="Connecting"), UP, _ping(), "push"),                 # answers again: whole state, Connected
    (_vr(), UP, _ping(generation=0), "push"),                        # runs an older push
    (_vr(), UP, _ping(digest="0" * 64), "upgrade"),                  # other agent code: the controller's pushed
    (_vr(), UP, _ping(digest=None), "upgrade"),                      # an agent from before code pushes
    (_vr(), UP, None, "reconnect"),                                  # no answer (or 401: it forgot its token)
    (_vr(), UP, _ping(uuid=None), "reconnect"),                      # answers, but not as this router
    (_vr(status="Disconnected"), UP, None, "recreate"),              # second failed check in a row
    (_vr(state="Stopped", status="Disconnected"), None, None, "recreate"),
    (_vr(state="Destroyed"), None, None, "recreate"),
    (_vr(state="Unknown"), DOWN, None, "recreate"),                  # on a lost host
    (_vr(state="Unknown"), None, None, "recreate"),                  # its host was deleted
    (_vr(state="Unknown"), UP, None, "wait"),                        # the host's sync will tell
    (_vr(), DOWN, None, "wait"),                                     # the host ping decides first
    (_vr(state="Starting"), UP, None, "wait"),
    (_vr(state="Rebooting"), UP, None, "wait"),
    (_vr(state="Migrating"), UP, None, "wait"),
])
def test_verdict(vr: dict[str, Any], host: dict[str, Any] | None, ping: dict[str, Any] | None,
                 expected: str) -> None:
    assert verdict(vr, host, ping, DIGEST) == expected


def test_the_agent_code_is_the_whole_vrouter_package() -> None:
    files, digest = agent_code()
    assert {"__init__.py", "agent.py", "render.py", "contract.py"} <= set(files) and len(digest) == 64


async def test_ping_interval_config(api: Api) -> None:
    (cfg,) = await api.query("QueryGlobalConfig", ("category", "=", "virtualRouter"), ("name", "=", "ping.interval"))
    assert cfg["value"] == cfg["defaultValue"] == "60"
    s, body = await api.raw("UpdateGlobalConfig", category="virtualRouter", name="ping.interval", value="0")
    assert s == 400 and "ping.interval" in body["error"]["details"] and ">= 1" in body["error"]["details"]
    upd = await api.inv("UpdateGlobalConfig", category="virtualRouter", name="ping.interval", value="5")
    assert upd["value"] == "5"
