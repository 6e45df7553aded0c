"""The web console against a controller with in-process agents (libvirt test driver): the VM wizard creates a
VM through the API dispatcher, the server-sent-events stream reports it Starting → Running and its job
Succeeded without any reload, the dashboard counts it, and stop / destroy / recover from the detail page work
(destroy after confirmation)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp import ClientResponse
from test_controller_compute import Env

from controller.ui.web import SESSION_COOKIE


async def ui_login(env: Env) -> str:
    c = env.client
    r = await c.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
    r = await c.post("/ui/login", data={"csrf": token, "account": "admin", "password": "password"},
                     allow_redirects=False)
    assert r.status == 303
    assert any(k.key == SESSION_COOKIE for k in c.session.cookie_jar)
    r = await c.get("/ui/")
    return re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]


async def next_events(stream: ClientResponse, want: Any, timeout: float = 30) -> list[tuple[str, dict[str, Any]]]:
    """Read SSE events until ``want(events)`` is true."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind = ""

    async def read() -> None:
        nonlocal kind
        while not want(events):
            line = (await stream.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))

    await asyncio.wait_for(read(), timeout)
    return events


async def test_wizard_live_states_and_actions(env: Env) -> None:
    csrf = await ui_login(env)
    c = env.client
    c.session.cookie_jar.update_cookies({"zs_lang": "zh_TW"})
    stream = await c.get("/ui/events")
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    r = await c.post("/ui/vms/new", data={"csrf": csrf, "name": "web", "count": "1",
                                          "instanceOfferingUuid": env.ids["offering"],
                                          "imageUuid": env.ids["image"], "l3NetworkUuids": env.ids["l3"],
                                          "defaultL3NetworkUuid": env.ids["l3"],
                                          "userdata": "#cloud-config\nhostname: web\n"})
    text = await r.text()
    assert r.status == 200, text
    assert "zstack-cli CreateVmInstance" in text and "name=web" in text
    vm_uuid = re.search(r'href="/ui/r/vms/([0-9a-f]{32})"', text).group(1)  # type: ignore[union-attr]

    def vm_states(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
        return [d["state"] for k, d in events if k == "vm" and d["uuid"] == vm_uuid]

    events = await next_events(stream, lambda ev: "Running" in vm_states(ev) and any(
        k == "job" and d["apiName"] == "CreateVmInstance" and d["state"] == "Succeeded" for k, d in ev))
    running = next(d for k, d in events if k == "vm" and d["uuid"] == vm_uuid and d["state"] == "Running")
    assert running["label"] == "執行中"  # translated for the stream's language
    vm = await env.vm(vm_uuid)
    assert vm["state"] == "Running" and vm["name"] == "web"
    tags = await env.query("QuerySystemTag", ("resourceUuid", "=", vm_uuid))
    assert any(t["tag"].startswith("userdata::#cloud-config") for t in tags)

    r = await c.get("/ui/")
    assert r.status == 200 and 'href="/ui/r/vms?state=Running"' in await r.text()
    r = await c.get(f"/ui/r/vms/{vm_uuid}")
    text = await r.text()
    assert f'data-vm-state="{vm_uuid}"' in text and "/act/stop" in text and "/act/start" not in text

    r = await c.post(f"/ui/r/vms/{vm_uuid}/act/stop", data={"csrf": csrf})
    assert r.status == 200 and "zstack-cli StopVmInstance" in await r.text()
    await next_events(stream, lambda ev: "Stopped" in vm_states(ev))
    assert (await env.vm(vm_uuid))["state"] == "Stopped"
    # destroy asks first
    r = await c.post(f"/ui/r/vms/{vm_uuid}/act/destroy", data={"csrf": csrf})
    assert r.status == 200 and 'name="confirmed"' in await r.text()
    assert (await env.vm(vm_uuid))["state"] == "Stopped"
    r = await c.post(f"/ui/r/vms/{vm_uuid}/act/destroy", data={"csrf": csrf, "confirmed": "yes"})
    assert r.status == 200
    await next_events(stream, lambda ev: "Destroyed" in vm_states(ev))
    r = await c.post(f"/ui/r/vms/{vm_uuid}/act/recover", data={"csrf": csrf})
    assert r.status == 200 and "zstack-cli RecoverVmInstance" in await r.text()
    assert (await env.vm(vm_uuid))["state"] == "Stopped"
    stream.close()
