"""The web console in a real browser on the testbed: sign in; switch to 繁體中文 and back; create a VM with
the wizard and watch it go Starting → Running without a reload; open its console and see the guest's screen
on the canvas (pixels); stop, destroy (confirmed), recover. Takes the README screenshots: into
``$ZSTACK_SCREENSHOT_DIR`` when set (``ZSTACK_SCREENSHOT_DIR=docs/screenshots`` refreshes the committed ones),
else into a temporary folder, so a CI run leaves the checkout as it was.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab import Testbed, TinyImage, reset_host
from selenium.webdriver.common.by import By
from test_compute import running_controller

SHOTS = Path(os.environ.get("ZSTACK_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="zs-ui-shots-"))

WATCH = "window.__noReload = true;"

# share of the canvas's pixels that are not the background: text on a VGA text screen lights a few percent
PIXELS = """
const c = document.querySelector('#console-screen canvas');
if (!c || !c.width) return [0, 0, 0];
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let lit = 0;
for (let i = 0; i < d.length; i += 4) { if (d[i] + d[i + 1] + d[i + 2] > 200) lit++; }
return [lit, c.width, c.height];
"""


def wait(what: str, fn: Callable[[], Any], timeout: float = 60, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = fn()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def click(d: Any, css: str) -> None:
    d.find_element(By.CSS_SELECTOR, css).click()


def rfb_security_types(host: str, port: int) -> list[int]:
    """The security types a VNC server offers to a plain RFB 3.8 client (1 = None, 2 = VNC password)."""
    with socket.create_connection((host, port), timeout=10) as s:
        assert s.recv(12).startswith(b"RFB 003.")
        s.sendall(b"RFB 003.008\n")
        n = s.recv(1)[0]
        return list(s.recv(n))


def flow(d: Any, url: str, api: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    SHOTS.mkdir(parents=True, exist_ok=True)
    d.get(url + "/")
    wait("the sign-in page", lambda: "/ui/login" in d.current_url)
    d.find_element(By.ID, "account").send_keys("admin")
    d.find_element(By.ID, "password").send_keys("password")
    click(d, "form button[type=submit]")
    wait("the dashboard", lambda: d.find_element(By.TAG_NAME, "h1").text == "Dashboard")
    # language: 繁體中文 and back, remembered across pages
    d.find_element(By.LINK_TEXT, "繁體中文").click()
    wait("the Taiwan dashboard", lambda: d.find_element(By.TAG_NAME, "h1").text == "儀表板")
    assert d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-TW"
    d.get(url + "/ui/r/images")
    assert d.find_element(By.TAG_NAME, "h1").text == "映像檔"
    d.find_element(By.LINK_TEXT, "English").click()
    wait("the English page", lambda: d.find_element(By.TAG_NAME, "h1").text == "Images")
    # the wizard
    d.get(url + "/ui/vms/new")
    d.find_element(By.ID, "vm-name").send_keys("browser-vm")
    click(d, "form.wizard button[type=submit]")
    link = wait("the submitted VM", lambda: d.find_element(By.CSS_SELECTOR, ".alert.ok a[href^='/ui/r/vms/']"))
    vm_uuid = link.get_attribute("href").rsplit("/", 1)[1]
    out["vm"] = vm_uuid
    d.execute_script(WATCH)
    wait("Running on the wizard's result page", lambda: d.find_element(
        By.CSS_SELECTOR, f'[data-vm-state="{vm_uuid}"]').get_attribute("data-state") == "Running", timeout=240)
    # ui.js records every state the element showed (data-seen), from the first event on
    out["seen"] = d.find_element(By.CSS_SELECTOR, f'[data-vm-state="{vm_uuid}"]').get_attribute("data-seen").split()
    out["no_reload"] = d.execute_script("return window.__noReload === true")
    # VM list, both languages (screenshots)
    d.get(url + "/ui/r/vms")
    wait("the VM in the list", lambda: "browser-vm" in d.page_source)
    d.save_screenshot(str(SHOTS / "vm-list-en.png"))
    d.get(url + "/ui/")
    d.save_screenshot(str(SHOTS / "dashboard-en.png"))
    d.get(url + "/ui/lang?to=zh_TW&next=/ui/r/vms")
    wait("the Taiwan VM list", lambda: d.find_element(By.TAG_NAME, "h1").text == "虛擬機器")
    d.save_screenshot(str(SHOTS / "vm-list-zh_TW.png"))
    d.get(url + "/ui/")
    d.save_screenshot(str(SHOTS / "dashboard-zh_TW.png"))
    # the console: noVNC over the controller's WebSocket proxy; the guest's screen has lit pixels
    d.get(url + f"/ui/vms/{vm_uuid}/console")
    wait("the console connected", lambda: d.find_element(By.ID, "console-status").get_attribute(
        "data-state") == "Connected", timeout=30)
    lit = wait("guest text on the canvas", lambda: (lambda p: p if p[0] > 500 else None)(d.execute_script(PIXELS)),
               timeout=120, every=1)
    out["pixels"] = lit
    # the console has a password (new at this start): a plain VNC client on the management network gets no
    # unauthenticated access; GetVmConsoleAddress gives the password to the signed-in session only
    addr = api("GetVmConsoleAddress", uuid=vm_uuid)
    out["password"] = addr.get("password")
    out["security"] = rfb_security_types(addr["hostIp"], addr["port"])
    time.sleep(1)
    d.save_screenshot(str(SHOTS / "console-zh_TW.png"))
    d.get(url + "/ui/lang?to=en&next=" + f"/ui/vms/{vm_uuid}/console")
    wait("the console connected again", lambda: d.find_element(By.ID, "console-status").get_attribute(
        "data-state") == "Connected", timeout=30)
    wait("guest text on the canvas again", lambda: d.execute_script(PIXELS)[0] > 500, timeout=60, every=1)
    time.sleep(1)
    d.save_screenshot(str(SHOTS / "console-en.png"))
    # stop, destroy (confirmed), recover from the detail page
    for action, state, confirm in (("stop", "Stopped", False), ("destroy", "Destroyed", True),
                                   ("recover", "Stopped", False)):
        d.get(url + f"/ui/r/vms/{vm_uuid}")
        click(d, f"form[action$='/act/{action}'] button")
        if confirm:
            wait("the confirmation", lambda: d.find_elements(By.CSS_SELECTOR, "input[name=confirmed]"))
            click(d, "form button.danger")
        wait(f"{state} after {action}", lambda s=state: d.find_element(
            By.CSS_SELECTOR, f'h1 [data-vm-state="{vm_uuid}"]').get_attribute("data-state") == s, timeout=120)
    return out


async def test_console_in_the_browser(browser_testbed: Testbed, browser_tiny: TinyImage, chrome: Any) -> None:
    host = browser_testbed.hosts[0]
    async with running_controller("browser", browser_tiny) as ctl:
        try:
            await ctl.add_host(host)
            loop = asyncio.get_running_loop()

            def api(name: str, **params: Any) -> dict[str, Any]:
                return asyncio.run_coroutine_threadsafe(ctl.inv(name, **params), loop).result(60)

            out = await asyncio.to_thread(flow, chrome, ctl.url, api)
        finally:
            reset_host(host)
    assert out["no_reload"], "the page reloaded"
    assert "Running" in out["seen"] and "Starting" in out["seen"], out["seen"]
    assert out["seen"].index("Starting") < out["seen"].index("Running")
    assert out["pixels"][0] > 500, out["pixels"]
    assert out["password"] and len(out["password"]) == 8, out
    assert out["security"] == [2], out["security"]  # VNC authentication only, never None
