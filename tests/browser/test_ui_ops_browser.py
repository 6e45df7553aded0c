"""An operator's path through the network-service and host pages in a real browser (headless Chromium), against
a controller with two real in-process agents (libvirt test driver; no guest boots: nothing here needs one):

* port forwarding: New VIP on the public L3 → New port forwarding rule (a refused port range shows the API's
  message naming the field, the value and what is allowed, the typed values kept) → attach to the VM's NIC chosen
  among the API's candidates → detach (confirmed) → delete (confirmed) → the list in 简体中文;
* host maintenance: the host list open in one tab, Maintenance mode (confirmed) from the host's page in another;
  the list shows Maintenance without a reload (live feed), then Enable from the host's page and the list shows
  Enabled.

The guest L3 gets VirtualRouter SNAT + PortForwarding after its VM started, so no router VM is created (the rule's
records change; the router's data plane is tested in tests/e2e/test_vrouter.py)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))

import test_controller_compute as tcc
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from test_controller_compute import Env
from test_ui_browser import SHOTS, WATCH, click, wait

env = tcc.env  # the fixture: a controller, two connected in-process agents, a local PS attached


def h1(d: Any) -> str:
    return str(d.find_element(By.TAG_NAME, "h1").text)


def fill(d: Any, values: dict[str, str]) -> None:
    for name, value in values.items():
        el = d.find_element(By.CSS_SELECTOR, f"form.wizard [name={name}]")
        if el.tag_name == "select":
            Select(el).select_by_value(value)
        else:
            el.clear()
            el.send_keys(value)


def port_forwarding(d: Any, url: str, ids: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    d.get(url + "/")
    wait("the sign-in page", lambda: "/ui/login" in d.current_url)
    d.find_element(By.ID, "account").send_keys("admin")
    d.find_element(By.ID, "password").send_keys("password")
    click(d, "form button[type=submit]")
    wait("the dashboard", lambda: h1(d) == "Dashboard")
    # the sidebar leads to the VIPs; New VIP on the public L3
    d.find_element(By.LINK_TEXT, "VIPs").click()
    wait("the VIP list", lambda: h1(d) == "VIPs")
    d.find_element(By.LINK_TEXT, "New VIP").click()
    wait("the VIP form", lambda: h1(d) == "New VIP")
    fill(d, {"name": "web-vip", "l3NetworkUuid": ids["pub"], "requiredIp": "192.168.90.20"})
    click(d, "form.wizard button[type=submit]")
    wait("the VIP created", lambda: d.find_element(By.ID, "created").text == "web-vip")
    # New port forwarding rule: first a range the API refuses
    d.find_element(By.LINK_TEXT, "Port forwarding").click()
    wait("the rule list", lambda: h1(d) == "Port forwarding")
    d.find_element(By.LINK_TEXT, "New port forwarding rule").click()
    wait("the rule form", lambda: h1(d) == "New port forwarding rule")
    vip = Select(d.find_element(By.NAME, "vipUuid"))
    out["vip_offered"] = [o.text for o in vip.options]
    fill(d, {"name": "ssh", "vipUuid": ids["vip_by_name"](), "protocolType": "TCP", "vipPortStart": "2222",
             "vipPortEnd": "2200", "privatePortStart": "22"})
    click(d, "form.wizard button[type=submit]")
    out["refusal"] = wait("the refusal", lambda: d.find_element(By.CSS_SELECTOR, ".alert.error").text)
    SHOTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(SHOTS / "pf-refused-en.png"))
    out["kept"] = d.find_element(By.NAME, "vipPortStart").get_attribute("value")
    fill(d, {"vipPortEnd": "2222"})
    click(d, "form.wizard button[type=submit]")
    wait("the rule created", lambda: d.find_element(By.ID, "created").text == "ssh")
    d.find_element(By.ID, "created").click()
    wait("the rule's page", lambda: h1(d).startswith("ssh"))
    # attach to the VM's NIC, chosen among the candidates the API gives
    nic = Select(d.find_element(By.CSS_SELECTOR, "form[action$='/act/attach'] select[name=vmNicUuid]"))
    out["nics_offered"] = [o.get_attribute("value") for o in nic.options]
    nic.select_by_value(ids["nic"])
    click(d, "form[action$='/act/attach'] button")
    wait("attached", lambda: d.find_elements(By.CSS_SELECTOR, "form[action$='/act/detach']"))
    out["after_attach"] = d.find_element(By.CSS_SELECTOR, ".alert.ok").text
    d.save_screenshot(str(SHOTS / "pf-attached-en.png"))
    out["guest_ip"] = ids["rule_guest_ip"]()
    click(d, "form[action$='/act/detach'] button")
    wait("the detach confirmation", lambda: d.find_elements(By.CSS_SELECTOR, "input[name=confirmed]"))
    click(d, "form button.danger")
    wait("detached", lambda: d.find_elements(By.CSS_SELECTOR, "form[action$='/act/attach']"))
    out["guest_ip_after_detach"] = ids["rule_guest_ip"]()
    click(d, "form[action$='/act/delete'] button")
    wait("the delete confirmation", lambda: d.find_elements(By.CSS_SELECTOR, "input[name=confirmed]"))
    click(d, "form button.danger")
    out["gone"] = wait("deleted", lambda: d.find_element(By.CSS_SELECTOR, ".alert.ok").text)
    # back to the list, in 简体中文
    d.find_element(By.LINK_TEXT, "简体中文").click()
    wait("the list in zh_CN", lambda: h1(d) == "端口转发")
    out["zh_rows"] = d.find_element(By.CSS_SELECTOR, "table.grid tbody").text
    d.find_element(By.LINK_TEXT, "English").click()
    wait("English again", lambda: h1(d) == "Port forwarding")
    return out


def maintenance(d: Any, url: str, host: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cell = f'table.grid [data-res-state="{host}"]'
    d.get(url + "/ui/r/hosts")
    wait("the host list", lambda: d.find_element(By.CSS_SELECTOR, cell).get_attribute("data-state") == "Enabled")
    d.execute_script(WATCH)
    listing = d.current_window_handle
    d.switch_to.new_window("tab")
    d.get(url + f"/ui/r/hosts/{host}")
    click(d, "form[action$='/act/maintain'] button")
    wait("the maintenance confirmation", lambda: d.find_elements(By.CSS_SELECTOR, "input[name=confirmed]"))
    click(d, "form button.danger")
    wait("the job submitted", lambda: "ChangeHostState" in d.find_element(By.CSS_SELECTOR, ".alert.ok").text)
    d.switch_to.window(listing)
    wait("Maintenance in the list, live", lambda: d.find_element(By.CSS_SELECTOR, cell).get_attribute(
        "data-state") == "Maintenance", timeout=120)
    out["label"] = d.find_element(By.CSS_SELECTOR, cell).text
    d.switch_to.window(d.window_handles[-1])
    d.get(url + f"/ui/r/hosts/{host}")
    wait("the host's page in Maintenance", lambda: d.find_elements(By.CSS_SELECTOR, "form[action$='/act/enable']"))
    out["maintain_offered_again"] = bool(d.find_elements(By.CSS_SELECTOR, "form[action$='/act/maintain']"))
    click(d, "form[action$='/act/enable'] button")
    d.switch_to.window(listing)
    wait("Enabled in the list, live", lambda: d.find_element(By.CSS_SELECTOR, cell).get_attribute(
        "data-state") == "Enabled", timeout=120)
    out["seen"] = d.find_element(By.CSS_SELECTOR, cell).get_attribute("data-seen").split()
    out["no_reload"] = d.execute_script("return window.__noReload === true")
    return out


async def test_port_forwarding_and_host_maintenance_in_the_browser(env: Env, chrome: Any) -> None:
    e = env
    # the public L3 on the same L2, a VM on the guest L3, then the guest L3 takes SNAT + PortForwarding
    [l3] = await e.query("QueryL3Network", ("uuid", "=", e.ids["l3"]))
    pub = await e.inv("CreateL3Network", name="pub", l2NetworkUuid=l3["l2NetworkUuid"])
    await e.call("AddIpRange", l3NetworkUuid=pub["uuid"], name="p", startIp="192.168.90.10", endIp="192.168.90.30",
                 netmask="255.255.255.0", gateway="192.168.90.1")
    a, b = (h["uuid"] for h in await e.hosts())
    status, body = await e.create_vm("web", hostUuid=a)
    assert status == 200, body
    nic = body["inventory"]["vmNics"][0]["uuid"]
    [vr] = await e.query("QueryNetworkServiceProvider", ("type", "=", "VirtualRouter"))
    await e.call("AttachNetworkServiceToL3Network", l3NetworkUuid=e.ids["l3"],
                 networkServices={vr["uuid"]: ["SNAT", "PortForwarding"]})
    loop = asyncio.get_running_loop()

    def sync(fn: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), loop).result(60)

    async def vip_uuid() -> str:
        return str((await e.query("QueryVip", ("name", "=", "web-vip")))[0]["uuid"])

    async def guest_ip() -> Any:
        return (await e.query("QueryPortForwardingRule", ("name", "=", "ssh")))[0]["guestIp"]

    ids = {"pub": pub["uuid"], "nic": nic, "vip_by_name": lambda: sync(vip_uuid),
           "rule_guest_ip": lambda: sync(guest_ip)}
    pf = await asyncio.to_thread(port_forwarding, chrome, e.url, ids)
    assert pf["vip_offered"] == ["web-vip · 192.168.90.20"], pf
    assert "vipPortEnd" in pf["refusal"] and "2200" in pf["refusal"] and "is below vipPortStart 2222" in pf[
        "refusal"], pf
    assert pf["kept"] == "2222", pf
    assert pf["nics_offered"] == [nic], pf
    assert "Attach to a VM NIC done" in pf["after_attach"] or "AttachPortForwardingRule" in pf["after_attach"], pf
    assert pf["guest_ip"] == body["inventory"]["vmNics"][0]["ip"] and pf["guest_ip_after_detach"] is None, pf
    assert "is gone" in pf["gone"] and "DeletePortForwardingRule" in pf["gone"], pf
    assert "ssh" not in pf["zh_rows"], pf
    assert await e.query("QueryPortForwardingRule") == []

    mt = await asyncio.to_thread(maintenance, chrome, e.url, b)
    assert mt["label"] == "Maintenance" and not mt["maintain_offered_again"], mt
    assert "Maintenance" in mt["seen"] and mt["seen"][-1] == "Enabled", mt
    assert mt["no_reload"], "the host list reloaded"
    assert [h["state"] for h in await e.hosts() if h["uuid"] == b] == ["Enabled"]
