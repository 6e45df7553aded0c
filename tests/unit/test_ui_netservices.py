"""The web console's pages for the network services and shared storage an operator sets up (VIPs, port forwarding,
EIPs, virtual router offerings, NFS / SharedMountPoint primary storage), driven as a browser would post them
(aiohttp test client, real controller with a fresh database, no host: the VM NICs are rows written straight into
the database, as tests/unit/test_api_vrouter_portforward.py does; with no router running the APIs only change
records). Checked: each create form and action goes through the API and shows its zstack-cli line; a refusal
shows the API's error naming the field, the value and what is allowed, keeps the typed values and changes
nothing; the NICs offered are the API's candidates; a migrating VM's page shows its progress from the start."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from aiohttp.test_utils import TestClient
from apiclient import Api
from test_api_vrouter_portforward import _env, _nic
from test_ui_pages import client, sign_in  # noqa: F401  (client is a fixture)

from controller.api.http import CORE
from controller.ui.resources import BY_SLUG


def created_uuid(text: str, slug: str) -> str:
    return re.search(rf'id="created" href="/ui/r/{slug}/([0-9a-f]{{32}})"', text).group(1)  # type: ignore[union-attr]


async def post(c: TestClient, path: str, csrf: str, **form: str) -> tuple[int, str]:
    r = await c.post(path, data={"csrf": csrf, **form})
    return r.status, await r.text()


async def test_port_forwarding_operator_path(client: TestClient) -> None:  # noqa: F811
    api = Api(client)
    await api.login()
    env = await _env(api)
    nic = await _nic(api, env["guest"], "10.100.0.12")
    csrf = await sign_in(client)

    text = await (await client.get("/ui/r/vips")).text()
    assert 'href="/ui/r/vips/new/vip"' in text
    text = await (await client.get("/ui/r/vips/new/vip")).text()
    assert f'<option value="{env["pub"]}">pub ({env["pub"][:8]})</option>' in text
    # a refused VIP: the API's message, the typed values kept, nothing created
    status, text = await post(client, "/ui/r/vips/new/vip", csrf, name="web", l3NetworkUuid=env["pub"],
                              requiredIp="192.168.77.300")
    assert status == 400 and "SYS.1007" in text and "requiredIp" in text and "192.168.77.300" in text, text
    assert 'value="192.168.77.300"' in text and await api.query("QueryVip") == []
    status, text = await post(client, "/ui/r/vips/new/vip", csrf, name="web", l3NetworkUuid=env["pub"],
                              requiredIp="192.168.77.15")
    assert status == 200 and "zstack-cli CreateVip" in text, text
    vip = created_uuid(text, "vips")

    form = await (await client.get("/ui/r/port-forwarding/new/rule")).text()
    assert f'<option value="{vip}">web · 192.168.77.15</option>' in form
    assert re.search(r'name="vipPortStart" type="number" inputmode="numeric" min="1" max="65535"', form)
    assert '<option value="TCP">TCP</option><option value="UDP">UDP</option></select>' in form
    base = {"name": "ssh", "vipUuid": vip, "protocolType": "TCP", "vipPortStart": "2222"}
    for over, words in (({"vipPortEnd": "2000"}, ("vipPortEnd", "2000", "is below vipPortStart 2222")),
                        ({"vipPortStart": "abc"}, ("vipPortStart", "abc")),
                        ({"vipPortStart": "70000"}, ("vipPortStart", "70000", "65535")),
                        ({"privatePortStart": "22", "privatePortEnd": "30", "vipPortEnd": "2223"},
                         ("privatePortEnd", "the port range size must match")),
                        ({"protocolType": "ICMP"}, ("protocolType", "ICMP", "TCP")),
                        ({"allowedCidr": "10.0.0.5/24"}, ("allowedCidr", "10.0.0.5/24", "e.g. 10.0.0.0/24"))):
        status, text = await post(client, "/ui/r/port-forwarding/new/rule", csrf, **{**base, **over})
        assert status == 400 and "SYS.1007" in text, (over, text)
        for w in words:
            assert w in text, (over, w, text)
        assert 'value="ssh"' in text   # the form keeps what was typed
    assert await api.query("QueryPortForwardingRule") == []
    status, text = await post(client, "/ui/r/port-forwarding/new/rule", csrf, **base, privatePortStart="22",
                              allowedCidr="203.0.113.0/24")
    assert status == 200 and "zstack-cli CreatePortForwardingRule" in text and "vipPortStart=2222" in text, text
    rule = created_uuid(text, "port-forwarding")
    [r] = await api.query("QueryPortForwardingRule", ("uuid", "=", rule))
    assert (r["vipPortStart"], r["vipPortEnd"], r["privatePortStart"], r["privatePortEnd"], r["allowedCidr"]) == (
        2222, 2222, 22, 22, "203.0.113.0/24")

    # attach: the NICs offered are GetPortForwardingAttachableVmNics'; ports show as typed (no 2,222)
    page = f"/ui/r/port-forwarding/{rule}"
    text = await (await client.get(page)).text()
    assert "<dt>vipPortStart</dt><dd>2222</dd>" in text and "2,222" not in text
    assert "<td>2222</td>" in await (await client.get("/ui/r/port-forwarding")).text()
    assert f'<option value="{nic}">vm · 10.100.0.12 (guest)</option>' in text and f"{rule}/act/detach" not in text
    status, text = await post(client, f"{page}/act/attach", csrf, vmNicUuid=nic)
    assert status == 200 and "zstack-cli AttachPortForwardingRule" in text, text
    assert (await api.query("QueryPortForwardingRule", ("uuid", "=", rule)))[0]["guestIp"] == "10.100.0.12"
    assert f'action="{page}/act/attach"' not in text and f'action="{page}/act/detach"' in text
    # the language links of the page an action answered with lead to that page, not to the action (a GET there
    # was 405 Method Not Allowed)
    assert f"next=/ui/r/port-forwarding/{rule}\"" in text and f"next=/ui/r/port-forwarding/{rule}/act" not in text
    # detach asks first
    status, text = await post(client, f"{page}/act/detach", csrf)
    assert status == 200 and 'name="confirmed"' in text
    assert (await api.query("QueryPortForwardingRule", ("uuid", "=", rule)))[0]["vmNicUuid"] == nic
    status, text = await post(client, f"{page}/act/detach", csrf, confirmed="yes")
    assert status == 200 and "zstack-cli DetachPortForwardingRule" in text
    assert (await api.query("QueryPortForwardingRule", ("uuid", "=", rule)))[0]["vmNicUuid"] is None
    # update (the form starts from the current name), disable (a Disabled rule offers no attach), enable
    assert 'id="update-name" name="name" type="text" value="ssh"' in await (await client.get(page)).text()
    status, text = await post(client, f"{page}/act/update", csrf, name="ssh-2", description="")
    assert status == 200 and (await api.query("QueryPortForwardingRule"))[0]["name"] == "ssh-2"
    status, text = await post(client, f"{page}/act/disable", csrf)
    assert status == 200 and f'action="{page}/act/attach"' not in text and f'action="{page}/act/enable"' in text
    status, text = await post(client, f"{page}/act/enable", csrf)
    assert status == 200 and f'action="{page}/act/attach"' in text
    status, text = await post(client, f"{page}/act/delete", csrf, confirmed="yes")
    assert status == 200 and await api.query("QueryPortForwardingRule") == []


async def test_eip_vip_state_and_zh_cn(client: TestClient) -> None:  # noqa: F811
    api = Api(client)
    await api.login()
    env = await _env(api)
    nic = await _nic(api, env["guest"], "10.100.0.12")
    taken = await api.inv("CreateVip", name="taken", l3NetworkUuid=env["pub"])
    await api.inv("CreatePortForwardingRule", name="r", vipUuid=taken["uuid"], vipPortStart=80, protocolType="TCP")
    free = await api.inv("CreateVip", name="free", l3NetworkUuid=env["pub"])
    csrf = await sign_in(client, "zh_CN")
    form = await (await client.get("/ui/r/eips/new/eip")).text()
    assert "新建弹性 IP" in form
    # a VIP serving port forwarding is not offered for an EIP
    assert f'value="{free["uuid"]}"' in form and f'value="{taken["uuid"]}"' not in form
    # the NICs offered: on L3s with the VirtualRouter Eip service only (not the NIC on the public L3)
    pub_nic = await _nic(api, env["pub"], "192.168.77.12")
    assert f'<option value="{nic}">vm · 10.100.0.12 (guest)</option>' in form and pub_nic not in form
    assert pub_nic not in await (await client.get("/ui/r/port-forwarding/new/rule")).text()
    status, text = await post(client, "/ui/r/eips/new/eip", csrf, name="e", vipUuid=free["uuid"], vmNicUuid=nic)
    assert status == 200 and "zstack-cli CreateEip" in text, text
    eip = created_uuid(text, "eips")
    page = f"/ui/r/eips/{eip}"
    status, text = await post(client, f"{page}/act/detach", csrf, confirmed="yes")
    assert status == 200 and (await api.query("QueryEip"))[0]["vmNicUuid"] is None
    text = await (await client.get(page)).text()
    assert f'<option value="{nic}">vm · 10.100.0.12 (guest)</option>' in text and "绑定到云主机网卡" in text
    status, text = await post(client, f"{page}/act/attach", csrf, vmNicUuid=nic)
    assert status == 200 and (await api.query("QueryEip"))[0]["guestIp"] == "10.100.0.12"
    # the VIP page: disable, then delete (after the EIP on it)
    status, text = await post(client, f"/ui/r/vips/{free['uuid']}/act/disable", csrf)
    assert status == 200 and (await api.query("QueryVip", ("uuid", "=", free["uuid"])))[0]["state"] == "Disabled"
    status, text = await post(client, f"{page}/act/delete", csrf, confirmed="yes")
    assert status == 200 and await api.query("QueryEip") == []
    status, text = await post(client, f"/ui/r/vips/{free['uuid']}/act/delete", csrf, confirmed="yes")
    assert status == 200 and [v["name"] for v in await api.query("QueryVip")] == ["taken"]


async def test_router_offering_and_shared_storage_forms(client: TestClient) -> None:  # noqa: F811
    api = Api(client)
    await api.login()
    env = await _env(api)
    csrf = await sign_in(client)
    text = await (await client.get("/ui/r/virtual-router-offerings/new/offering")).text()
    assert 'name="memorySize" type="number"' in text and "Memory (MiB)" in text
    status, text = await post(client, "/ui/r/virtual-router-offerings/new/offering", csrf, name="vr",
                              zoneUuid=env["zone"], cpuNum="1", cpuSpeed="1000", memorySize="256",
                              managementNetworkUuid=env["pub"], imageUuid="f" * 32, isDefault="true")
    # the form's MiB went to the API as bytes; the unknown image is named
    assert status == 404 and "memorySize=268435456" in text and "imageUuid" in text, text
    assert await api.query("QueryVirtualRouterOffering") == []

    links = await (await client.get("/ui/r/primary-storage")).text()
    assert 'href="/ui/r/primary-storage/new/nfs"' in links and 'href="/ui/r/primary-storage/new/smp"' in links
    status, text = await post(client, "/ui/r/primary-storage/new/nfs", csrf, name="nfs", zoneUuid=env["zone"],
                              url="no-colon-here")
    assert status == 400 and "url" in text and "no-colon-here" in text and "192.168.0.220:/storage/nfs" in text
    assert await api.query("QueryPrimaryStorage") == []
    status, text = await post(client, "/ui/r/primary-storage/new/nfs", csrf, name="nfs", zoneUuid=env["zone"],
                              url="192.168.0.5:/exports/ps")
    assert status == 200 and "zstack-cli AddNfsPrimaryStorage" in text, text
    ps = created_uuid(text, "primary-storage")
    status, text = await post(client, "/ui/r/primary-storage/new/smp", csrf, name="smp", zoneUuid=env["zone"],
                              url="relative/path")
    assert status == 400 and "url" in text and "relative/path" in text
    # the detail page offers the zone's clusters to attach to, and maintenance mode
    cluster = await api.inv("CreateCluster", name="c9", zoneUuid=env["zone"], hypervisorType="KVM")
    text = await (await client.get(f"/ui/r/primary-storage/{ps}")).text()
    assert f'<option value="{cluster["uuid"]}">c9 ({cluster["uuid"][:8]})</option>' in text
    assert f'action="/ui/r/primary-storage/{ps}/act/maintain"' in text and "act/detach-cluster" not in text
    status, text = await post(client, f"/ui/r/primary-storage/{ps}/act/maintain", csrf, confirmed="yes")
    assert status == 200 and (await api.query("QueryPrimaryStorage"))[0]["state"] == "Maintenance"


def test_host_maintenance_offered_when_the_api_allows_it() -> None:
    maintain = BY_SLUG["hosts"].action("maintain")
    enable = BY_SLUG["hosts"].action("enable")
    assert maintain is not None and enable is not None
    assert [s for s in ("Enabled", "Disabled", "PreMaintenance", "Maintenance") if maintain.when({"state": s})] == [
        "Enabled", "Disabled"]
    assert enable.when({"state": "Maintenance"}) and not enable.when({"state": "Enabled"})


async def test_migrating_vm_page_shows_progress_at_once(client: TestClient) -> None:  # noqa: F811
    """A page opened while a migration runs shows its progress in the first render (the live feed updates it)."""
    api = Api(client)
    await api.login()
    env = await _env(api)
    nic = await _nic(api, env["guest"], "10.100.0.12", state="Running")
    [row] = await api.query("QueryVmNic", ("uuid", "=", nic))
    vm = row["vmInstanceUuid"]
    await sign_in(client, "zh_CN")
    text = await (await client.get(f"/ui/r/vms/{vm}")).text()
    assert f'data-vm-progress="{vm}" role="status" hidden></span>' in text
    items: dict[str, Any] = client.app[CORE].jobs.items
    items[vm] = {"percent": 45, "memoryTotal": 128 << 20, "memoryProcessed": 70 << 20, "diskTotal": 72 << 20,
                 "diskProcessed": 20 << 20}
    try:
        text = await (await client.get(f"/ui/r/vms/{vm}")).text()
    finally:
        items.pop(vm)
    assert f'data-vm-progress="{vm}" role="status">迁移中 45% · 内存 70/128 MiB · 云盘 20/72 MiB</span>' in text, text


async def test_network_service_states_are_live(client: TestClient) -> None:  # noqa: F811
    """A VIP or rule changed by another operator (here the API) reaches open pages over the live feed, in the
    page's language; the pages mark the cells the feed updates."""
    api = Api(client)
    await api.login()
    env = await _env(api)
    vip = await api.inv("CreateVip", name="v", l3NetworkUuid=env["pub"])
    rule = await api.inv("CreatePortForwardingRule", name="r", vipUuid=vip["uuid"], vipPortStart=80,
                         protocolType="TCP")
    await sign_in(client, "zh_CN")
    assert f'data-res-state="{rule["uuid"]}"' in await (await client.get("/ui/r/port-forwarding")).text()
    assert f'data-res-state="{vip["uuid"]}"' in await (await client.get(f"/ui/r/vips/{vip['uuid']}")).text()
    stream = await client.get("/ui/events")
    assert (await stream.content.readline()).decode().startswith(": connected")
    await api.call("ChangePortForwardingRuleState", uuid=rule["uuid"], stateEvent="disable")
    await api.call("ChangeVipState", uuid=vip["uuid"], stateEvent="disable")
    seen: dict[str, dict[str, Any]] = {}

    async def read() -> None:
        kind = ""
        while not all(seen.get(u, {}).get("state") == "Disabled" for u in (rule["uuid"], vip["uuid"])):
            line = (await stream.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "res":
                d = json.loads(line[6:])
                seen[d["uuid"]] = d

    await asyncio.wait_for(read(), 30)
    assert (seen[rule["uuid"]]["label"], seen[rule["uuid"]]["status"]) == ("已停用", None), seen
    stream.close()
