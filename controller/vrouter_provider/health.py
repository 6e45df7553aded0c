"""The routers' health check and self-healing (better than 1.0, whose ping only reconnected, and whose VM
starts failed while a router was down: "We don't have HA feature now").

Every ``virtualRouter/ping.interval`` seconds (1.0's name, default 60) each router is checked in its guest
L3's queue (``vr-l3-<l3>``: never beside a creation or a push). :func:`verdict` decides from the router's VM
state, its host and its agent's ``/ping`` through the host relay:

* ``ok``: Running, the agent answers with the router's uuid, the controller's agent code and the last
  generation pushed;
* ``push``: the agent answers but runs an older generation (or the router was not Connected): whole state;
* ``upgrade``: the agent runs other code than the controller's ``vrouter`` package: the code is pushed over
  the authenticated channel and the agent restarts with it (no new image), then the whole state;
* ``reconnect``: the agent does not answer, or not as this router (a rebooted router forgot its token): init
  and whole state (status Connecting, then Connected or Disconnected);
* ``recreate``: its VM is Stopped or Destroyed, Unknown on a host that is not Connected, or the agent failed
  a second check in a row (Disconnected): the router is destroyed and created again (it is stateless: the
  whole state is pushed to the new one). Only while its L3 still takes router services from VirtualRouter
  (after seed section 13's detach it is left alone until it is destroyed);
* ``wait``: an operation is under way (intermediate state) or its host is not Connected yet.

The outcome shows in the router's inventory ``status`` (Connecting / Connected / Disconnected).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controller.core import Controller, on_start
from controller.errors import ApiError
from controller.globalconfig import ConfigDef, register_config
from controller.vrouter_provider.hooks import ROUTER_SERVICES
from controller.vrouter_provider.router import (
    agent_code,
    call_router,
    connect_agent,
    create_router,
    destroy_router,
    push_state,
    router_of,
    upgrade_agent,
    vr_services,
)
from zsutil.tasks import every

log = logging.getLogger(__name__)

INTERVAL = register_config(ConfigDef(
    "virtualRouter", "ping.interval", "60", int, min=1, description=(
        "Seconds between two health checks of every virtual router (its agent's /ping through the host's "
        "relay); a router that does not answer is reconnected, one whose VM is gone, stopped or on a lost host "
        "is created again, one running other agent code gets the controller's.")))
#: one /ping through the host relay
PING_TIMEOUT = 15.0
#: a reconnect from the health check (the agent is expected up: shorter than a boot)
RECONNECT_TIMEOUT = 30.0


def verdict(vr: dict[str, Any], host: dict[str, Any] | None, ping: dict[str, Any] | None, digest: str) -> str:
    """What to do with a router (see the module's docstring)."""
    state = vr["state"]
    host_up = host is not None and host["status"] == "Connected"
    if state in ("Stopped", "Destroyed") or (state == "Unknown" and not host_up):
        return "recreate"
    if state != "Running" or not host_up:
        return "wait"
    if ping is None or ping.get("uuid") != vr["uuid"]:
        return "recreate" if vr["status"] == "Disconnected" else "reconnect"
    if ping.get("digest") != digest:
        return "upgrade"
    if ping.get("generation") != vr["generation"] or vr["status"] != "Connected":
        return "push"
    return "ok"


async def check(core: Controller, l3_uuid: str) -> str:
    """Check the L3's router once (in the L3's queue) and heal it; the action taken."""
    return await core.queues.run(f"vr-l3-{l3_uuid}", lambda: _check(core, l3_uuid))


async def _check(core: Controller, l3_uuid: str) -> str:
    vr = await router_of(core.db, l3_uuid)
    if vr is None:
        return "gone"
    host_row = await core.db.fetchone("SELECT * FROM Host WHERE uuid=?", (vr["hostUuid"],)) if vr["hostUuid"] \
        else None
    host = dict(host_row) if host_row is not None else None
    ping = None
    if vr["state"] == "Running" and host is not None and host["status"] == "Connected":
        try:
            ping = await call_router(core, vr, "/ping", {}, timeout=PING_TIMEOUT)
        except ApiError as e:
            log.warning("router %s of l3 %s does not answer its ping: %s", vr["uuid"], l3_uuid, e.details)
    action = verdict(vr, host, ping, agent_code()[1])
    if action == "recreate" and not await vr_services(core.db, l3_uuid) & ROUTER_SERVICES:
        action = "wait"   # the L3 no longer uses its router: left as it is until someone destroys it
    if action != "ok":
        log.info("health check of router %s (l3 %s, %s, status %s): %s", vr["uuid"], l3_uuid, vr["state"],
                 vr["status"], action)
    try:
        if action == "push":
            await push_state(core, vr)
        elif action == "upgrade":
            assert ping is not None
            await upgrade_agent(core, vr, ping)
            await connect_agent(core, vr, timeout=RECONNECT_TIMEOUT)
        elif action == "reconnect":
            await _set_status(core, vr["uuid"], "Connecting")
            await connect_agent(core, vr, timeout=RECONNECT_TIMEOUT)
        elif action == "recreate":
            await destroy_router(core, vr)
            await create_router(core, l3_uuid)
    except ApiError as e:
        log.warning("health check of router %s: %s failed: %s", vr["uuid"], action, e.details)
        if await router_of(core.db, l3_uuid) is not None:
            await _set_status(core, vr["uuid"], "Disconnected")
        return f"{action} failed"
    return action


async def _set_status(core: Controller, uuid: str, status: str) -> None:
    async with core.db.write() as tx:
        await tx.execute("UPDATE ApplianceVm SET status=? WHERE uuid=?", (status, uuid))


async def check_all(core: Controller) -> dict[str, str]:
    """One round: every router, concurrently (each in its own L3's queue); {l3: action}."""
    l3s = [r[0] for r in await core.db.fetchall("SELECT guestL3NetworkUuid FROM ApplianceVm WHERE "
                                                "guestL3NetworkUuid IS NOT NULL")]
    results = await asyncio.gather(*(check(core, l3) for l3 in l3s), return_exceptions=True)
    out: dict[str, str] = {}
    for l3, r in zip(l3s, results, strict=True):
        if isinstance(r, BaseException):
            log.error("health check of the router of l3 %s failed: %r", l3, r)
            out[l3] = "error"
        else:
            out[l3] = r
    return out


@on_start(70, "vrouter health")
async def _start(core: Controller) -> None:
    configs = core.services["configs"]

    def interval() -> float:
        return float(configs.get_int(INTERVAL.category, INTERVAL.name))

    rounds: set[asyncio.Task[dict[str, str]]] = set()

    async def round_() -> None:
        # shielded: a new interval restarts the loop, and must not cancel a re-creation half-way
        t = asyncio.create_task(check_all(core), name="vrouter-health-round")
        rounds.add(t)
        t.add_done_callback(rounds.discard)
        await asyncio.shield(t)

    def start() -> None:
        core.tasks.start("vrouter-health", lambda: every(interval, round_))

    async def interval_changed(_category: str, _name: str, _value: str) -> None:
        start()   # a new interval applies now, not after the current sleep

    configs.listen((INTERVAL.category, INTERVAL.name), interval_changed)
    start()
