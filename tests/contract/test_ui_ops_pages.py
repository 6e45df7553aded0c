"""The web console's operator pages against a controller with two real in-process agents (libvirt test driver):
a Running VM's page offers MigrateVm with the API's candidate hosts (GetVmMigrationCandidateHosts: the other
host, not its own); migrating from the page moves it (the hypervisor part replaced as in
tests/contract/test_host_maintenance.py, since the test driver cannot live-migrate) and the page's live feed
reports the job Succeeded and the VM Running; host maintenance from the host's page (confirmed) shows Maintenance
over the live feed in the page's language, then enable brings it back, with no reload; a virtual router offering
from its form."""

from __future__ import annotations

from typing import Any

import pytest
import test_controller_compute as tcc
from test_controller_compute import Env
from test_host_maintenance import _host, _hosts, _moves, _vm_on
from test_ui_live import next_events, ui_login

env = tcc.env  # the fixture: a controller, two connected in-process agents, a local PS attached

Events = list[tuple[str, dict[str, Any]]]


async def test_migrate_with_a_candidate_and_host_maintenance_live(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    e = env
    c = e.client
    csrf = await ui_login(e)
    c.session.cookie_jar.update_cookies({"zs_lang": "zh_TW"})
    a, b = await _hosts(e)
    names = {h["uuid"]: h["name"] for h in await e.hosts()}
    vm = (await _vm_on(e, "mover", a))["uuid"]
    stream = await c.get("/ui/events")
    assert stream.status == 200

    page = f"/ui/r/vms/{vm}"
    text = await (await c.get(page)).text()
    assert f'action="{page}/act/migrate"' in text and "遷移" in text
    assert f'<option value="{b}">{names[b]} · ' in text and f'<option value="{a}">' not in text
    _moves(e, monkeypatch, {vm})
    r = await c.post(f"{page}/act/migrate", data={"csrf": csrf, "hostUuid": b})
    text = await r.text()
    assert r.status == 200 and "zstack-cli MigrateVm" in text and f"hostUuid={b}" in text, text

    def vm_states(ev: Events) -> list[str]:
        return [d["state"] for k, d in ev if k == "vm" and d["uuid"] == vm]

    def job_done(ev: Events, api: str) -> bool:
        return any(k == "job" and d["apiName"] == api and d["state"] != "Processing" for k, d in ev)

    events = await next_events(stream, lambda ev: "Running" in vm_states(ev) and job_done(ev, "MigrateVm"), 120)
    assert vm_states(events)[-1] == "Running", events   # (Migrating is too short here for the feed to see)
    assert any(k == "job" and d["apiName"] == "MigrateVm" and d["state"] == "Succeeded" for k, d in events), events
    assert (await e.vm(vm))["hostUuid"] == b

    # host maintenance from the host's page: asked first, then Maintenance over the live feed (zh_TW label)
    hpage = f"/ui/r/hosts/{a}"
    text = await (await c.get(hpage)).text()
    assert f'data-res-state="{a}"' in text and f'data-res-status="{a}"' in text
    assert f'action="{hpage}/act/maintain"' in text and f'action="{hpage}/act/enable"' not in text
    r = await c.post(f"{hpage}/act/maintain", data={"csrf": csrf})
    assert r.status == 200 and 'name="confirmed"' in await r.text()
    assert (await _host(e, a))["state"] == "Enabled"
    r = await c.post(f"{hpage}/act/maintain", data={"csrf": csrf, "confirmed": "yes"})
    assert r.status == 200 and "zstack-cli ChangeHostState" in await r.text()

    def host_states(ev: Events) -> list[dict[str, Any]]:
        return [d for k, d in ev if k == "res" and d["uuid"] == a]

    events = await next_events(stream, lambda ev: any(d["state"] == "Maintenance" for d in host_states(ev)), 120)
    last = host_states(events)[-1]
    assert (last["state"], last["label"], last["status"], last["statusLabel"]) == (
        "Maintenance", "維護中", "Connected", "已連線"), events
    assert (await _host(e, a))["state"] == "Maintenance"
    text = await (await c.get(hpage)).text()
    assert f'action="{hpage}/act/enable"' in text and f'action="{hpage}/act/maintain"' not in text
    r = await c.post(f"{hpage}/act/enable", data={"csrf": csrf})
    assert r.status == 200
    await next_events(stream, lambda ev: any(d["state"] == "Enabled" for d in host_states(ev)), 120)
    assert (await _host(e, a))["state"] == "Enabled"
    stream.close()


async def test_router_offering_from_its_form(env: Env) -> None:
    """The virtual router offering form (its image chosen among the Ready images, memory typed in MiB)."""
    e = env
    csrf = await ui_login(e)
    form = await (await e.client.get("/ui/r/virtual-router-offerings/new/offering")).text()
    assert f'<option value="{e.ids["image"]}">tiny (' in form
    r = await e.client.post("/ui/r/virtual-router-offerings/new/offering", data={
        "csrf": csrf, "name": "vr", "zoneUuid": e.ids["zone"], "cpuNum": "1", "cpuSpeed": "1000",
        "memorySize": "256", "managementNetworkUuid": e.ids["l3"], "imageUuid": e.ids["image"], "isDefault": "true"})
    text = await r.text()
    assert r.status == 200 and "zstack-cli CreateVirtualRouterOffering" in text, text
    [o] = await e.query("QueryVirtualRouterOffering")
    assert (o["name"], o["memorySize"], o["isDefault"], o["imageUuid"]) == ("vr", 256 << 20, True, e.ids["image"])
    text = await (await e.client.get(f"/ui/r/virtual-router-offerings/{o['uuid']}")).text()
    assert 'id="update-name" name="name" type="text" value="vr"' in text
