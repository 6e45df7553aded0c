"""The web console's pages render in English, 简体中文 and 繁體中文 (aiohttp test client, real controller with a
fresh database); sign-in, CSRF, session cookie and language choice behave."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apiclient import Api, sign_in

from controller.app import create_app
from controller.config import ControllerConfig
from controller.ui.resources import RESOURCES

LANGS = ("en", "zh_CN", "zh_TW")
#: a word every page's navigation shows, per language (proves the catalog is applied)
DASHBOARD_WORD = {"en": "Dashboard", "zh_CN": "仪表盘", "zh_TW": "儀表板"}


@pytest.fixture
async def client(controller_config: ControllerConfig) -> AsyncIterator[TestClient]:
    app = create_app(controller_config)
    async with TestClient(TestServer(app)) as c:
        yield c


async def seed(client: TestClient) -> dict[str, str]:
    a = Api(client)
    await a.login()
    zone = await a.inv("CreateZone", name="zone-1")
    cluster = await a.inv("CreateCluster", zoneUuid=zone["uuid"], name="cluster-1", hypervisorType="KVM")
    await a.inv("CreateInstanceOffering", name="small", cpuNum=1, cpuSpeed=1000, memorySize=256 * 1024 * 1024)
    await a.inv("CreateDiskOffering", name="disk-1", diskSize=1024**3)
    l2 = await a.inv("CreateL2NoVlanNetwork", name="l2-1", zoneUuid=zone["uuid"], physicalInterface="eth0")
    l3 = await a.inv("CreateL3Network", name="l3-1", l2NetworkUuid=l2["uuid"])
    await a.inv("AddIpRange", l3NetworkUuid=l3["uuid"], name="r1", startIp="10.0.0.10", endIp="10.0.0.200",
                netmask="255.255.255.0", gateway="10.0.0.1")
    sg = await a.inv("CreateSecurityGroup", name="sg-1")
    await a.inv("AddSecurityGroupRule", securityGroupUuid=sg["uuid"],
                rules=[{"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22,
                        "allowedCidr": "10.0.0.0/8"}])
    return {"zone": zone["uuid"], "cluster": cluster["uuid"], "l3": l3["uuid"], "sg": sg["uuid"]}


async def test_root_redirects_and_pages_need_a_session(client: TestClient) -> None:
    r = await client.get("/", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/ui/"
    assert (await client.get("/ui/events")).status == 403
    for path in ["/ui/", "/ui/r/vms", "/ui/r/zones/x", "/ui/vms/new", "/ui/jobs", "/ui/vms/x/console"]:
        r = await client.get(path, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/ui/login?next="), path
    r = await client.post("/ui/vms/new", data={"name": "x"}, allow_redirects=False)
    assert r.status == 303
    r = await client.get("/ui/static/ui.css")
    assert r.status == 200
    r = await client.get("/ui/login")
    assert r.status == 200
    # the JSON API is unchanged
    r = await client.post("/v1/QueryZone", json={"conditions": []})
    assert r.status == 401


async def test_login_errors_and_csrf(client: TestClient) -> None:
    r = await client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
    r = await client.post("/ui/login", data={"csrf": "forged", "account": "admin", "password": "password"},
                          allow_redirects=False)
    assert r.status == 403
    r = await client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
    r = await client.post("/ui/login", data={"csrf": token, "account": "admin", "password": "wrong"},
                          allow_redirects=False)
    assert r.status == 401
    text = await r.text()
    assert "ID.1000" in text and "Wrong account name or password" in text
    csrf = await sign_in(client)
    # a POST without or with a wrong CSRF token changes nothing
    r = await client.post("/ui/vms/new", data={"name": "vm"}, allow_redirects=False)
    assert r.status == 403
    r = await client.post("/ui/logout", data={"csrf": csrf + "0"}, allow_redirects=False)
    assert r.status == 403
    assert (await client.get("/ui/", allow_redirects=False)).status == 200
    r = await client.post("/ui/logout", data={"csrf": csrf}, allow_redirects=False)
    assert r.status == 303
    assert (await client.get("/ui/", allow_redirects=False)).status == 303


@pytest.mark.parametrize("lang", LANGS)
async def test_every_page_renders(client: TestClient, lang: str) -> None:
    ids = await seed(client)
    await sign_in(client, lang)
    assert (await client.get("/ui/jobs/panel")).status == 200
    pages = ["/ui/", "/ui/jobs", "/ui/vms/new"]
    for res in RESOURCES:
        pages.append(f"/ui/r/{res.slug}")
        pages.append(f"/ui/r/{res.slug}?sort={res.columns[0].field}&dir=desc&page=1&size=50&name=a")
        if res.states:
            pages.append(f"/ui/r/{res.slug}?state={res.states[0]}")
    pages += [f"/ui/r/zones/{ids['zone']}", f"/ui/r/clusters/{ids['cluster']}", f"/ui/r/l3-networks/{ids['l3']}",
              "/ui/r/global-configs/identity:session.timeout", "/ui/r/zones?zone=" + ids["zone"],
              f"/ui/r/security-groups/{ids['sg']}", "/ui/security-groups/new"]
    for path in pages:
        r = await client.get(path)
        text = await r.text()
        assert r.status == 200, (path, text[:2000])
        assert DASHBOARD_WORD[lang] in text, path
        assert f'lang="{lang.replace("_", "-")}"' in text
    r = await client.get("/ui/r/zones")
    assert "zone-1" in await r.text()
    # the security-group pages in the page's language, with the rule and the translated actions
    sg_words = {"en": ("Security groups", "Add rule"), "zh_CN": ("安全组", "添加规则"),
                "zh_TW": ("安全群組", "新增規則")}[lang]
    text = await (await client.get("/ui/r/security-groups")).text()
    assert "sg-1" in text and sg_words[0] in text
    text = await (await client.get(f"/ui/r/security-groups/{ids['sg']}")).text()
    assert sg_words[1] in text and "10.0.0.0/8" in text
    assert ('<select id="add-rule-protocol" name="protocol" required><option value="TCP">TCP</option>'
            '<option value="UDP">UDP</option><option value="ICMP">ICMP</option>') in text
    r = await client.get("/ui/r/zones/nope")
    assert r.status == 404


async def test_language_cookie_and_accept_language(client: TestClient) -> None:
    await sign_in(client)
    r = await client.get("/ui/", headers={"Accept-Language": "zh-TW,zh;q=0.9"})
    assert "儀表板" in await r.text() or "Dashboard" in await r.text()
    client.session.cookie_jar.clear()
    r = await client.get("/ui/login", headers={"Accept-Language": "zh-TW,zh;q=0.9"})
    assert "登入" in await r.text()
    r = await client.get("/ui/login", headers={"Accept-Language": "zh-CN"})
    assert "登录" in await r.text()
    r = await client.get("/ui/login", headers={"Accept-Language": "fr"})
    assert "Sign in" in await r.text()
    r = await client.get("/ui/lang?to=zh_TW&next=/ui/login", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/ui/login"
    assert "zs_lang=zh_TW" in r.headers["Set-Cookie"]
    r = await client.get("/ui/lang?to=zh_TW&next=https://evil.example/", allow_redirects=False)
    assert r.headers["Location"] == "/ui/"
    r = await client.get("/ui/lang?to=xx", allow_redirects=False)
    assert r.status == 400


async def test_actions_go_through_the_api_with_confirmation(client: TestClient) -> None:
    ids = await seed(client)
    csrf = await sign_in(client)
    base = f"/ui/r/zones/{ids['zone']}/act"
    r = await client.post(f"{base}/disable", data={"csrf": csrf})
    text = await r.text()
    assert r.status == 200 and "zstack-cli ChangeZoneState" in text and "stateEvent=disable" in text
    r = await client.get("/ui/r/zones?state=Disabled")
    assert "zone-1" in await r.text()
    # a destructive action first asks
    r = await client.post(f"{base}/delete", data={"csrf": csrf})
    assert r.status == 200 and "confirmed" in await r.text()
    r = await client.get(f"/ui/r/zones/{ids['zone']}")
    assert r.status == 200
    # not allowed in this state → refused, nothing changes
    r = await client.post(f"{base}/disable", data={"csrf": csrf})
    assert r.status == 409
    r = await client.post(f"{base}/delete", data={"csrf": csrf, "confirmed": "yes"})
    assert r.status == 404 or "zstack-cli DeleteZone" in await r.text()
    r = await client.get(f"/ui/r/zones/{ids['zone']}")
    assert r.status == 404


async def test_security_group_created_and_rule_added_through_the_forms(client: TestClient) -> None:
    ids = await seed(client)
    csrf = await sign_in(client)
    a = Api(client)
    await a.login()
    # without the CSRF token nothing is created
    r = await client.post("/ui/security-groups/new", data={"name": "web"}, allow_redirects=False)
    assert r.status == 403
    assert [g["name"] for g in await a.query("QuerySecurityGroup")] == ["sg-1"]
    r = await client.post("/ui/security-groups/new", data={"csrf": csrf, "name": ""})
    assert r.status == 400 and "Name: enter a name." in await r.text()
    r = await client.post("/ui/security-groups/new", data={"csrf": csrf, "name": "web", "description": "http"})
    text = await r.text()
    assert r.status == 200 and "zstack-cli CreateSecurityGroup" in text, text[:3000]
    sg = next(g for g in await a.query("QuerySecurityGroup") if g["name"] == "web")
    assert sg["description"] == "http" and sg["rules"] == []
    base = f"/ui/r/security-groups/{sg['uuid']}/act"
    rule = {"type": "Ingress", "protocol": "TCP", "startPort": "443", "endPort": "80", "allowedCidr": "0.0.0.0/0"}
    r = await client.post(f"{base}/add-rule", data=rule)
    assert r.status == 403
    r = await client.post(f"{base}/add-rule", data={"csrf": csrf, **rule})
    text = await r.text()
    assert r.status == 200 and "zstack-cli AddSecurityGroupRule" in text, text[:3000]
    rules = (await a.query("QuerySecurityGroup", ("uuid", "=", sg["uuid"])))[0]["rules"]
    assert [(x["type"], x["protocol"], x["startPort"], x["endPort"], x["allowedCidr"]) for x in rules] == \
        [("Ingress", "TCP", 80, 443, "0.0.0.0/0")]
    r = await client.get(f"/ui/r/security-groups/{sg['uuid']}")
    assert rules[0]["uuid"] in await r.text()
    # a bad port: the API's error names the field and value, nothing added
    r = await client.post(f"{base}/add-rule", data={"csrf": csrf, **rule, "startPort": "70000"})
    assert r.status == 400 and "70000" in await r.text()
    # attach an L3 (needs the SecurityGroup service: refused with the reason), delete the rule
    r = await client.post(f"{base}/attach-l3", data={"csrf": csrf, "l3NetworkUuid": ids["l3"]})
    text = await r.text()
    assert r.status >= 400 and "SecurityGroup" in text and ids["l3"] in text, text[-3000:]
    assert (await a.query("QuerySecurityGroup", ("uuid", "=", sg["uuid"])))[0]["attachedL3NetworkUuids"] == []
    r = await client.post(f"{base}/delete-rule", data={"csrf": csrf, "ruleUuid": rules[0]["uuid"]})
    assert r.status == 200 and "zstack-cli DeleteSecurityGroupRule" in await r.text()
    sg = (await a.query("QuerySecurityGroup", ("uuid", "=", sg["uuid"])))[0]
    assert sg["rules"] == []


async def test_api_errors_keep_code_and_english_details_with_translated_summary(client: TestClient) -> None:
    await seed(client)
    csrf = await sign_in(client, "zh_TW")
    r = await client.post("/ui/r/global-configs/identity:session.timeout/act/update",
                          data={"csrf": csrf, "value": "not-a-number"})
    text = await r.text()
    assert r.status == 400
    assert "SYS.1007" in text and "一個或多個參數無效" in text
    assert "not-a-number" in text  # the English details name the value


async def test_vm_wizard_validates_and_submits(client: TestClient) -> None:
    ids = await seed(client)
    csrf = await sign_in(client)
    r = await client.post("/ui/vms/new", data={"csrf": csrf, "name": "", "count": "0"})
    text = await r.text()
    assert r.status == 400 and "Count: 0 is not a whole number from 1 to 50." in text
    a = Api(client)
    await a.login()
    offering = (await a.query("QueryInstanceOffering"))[0]["uuid"]
    r = await client.post("/ui/vms/new", data={"csrf": csrf, "name": "web", "count": "2",
                                               "instanceOfferingUuid": offering, "imageUuid": "0" * 32,
                                               "l3NetworkUuids": ids["l3"], "defaultL3NetworkUuid": ids["l3"]})
    text = await r.text()
    # no image exists: the API refuses it, and the page says so with the code and the CLI line
    assert "zstack-cli CreateVmInstance" in text and "name=web-1" in text


async def test_bulk_actions_and_tag_filter(client: TestClient) -> None:
    a = Api(client)
    await a.login()
    zones = [await a.inv("CreateZone", name=f"bulk-{i}") for i in range(3)]
    await a.inv("CreateUserTag", resourceType="ZoneVO", resourceUuid=zones[0]["uuid"], tag="team-a")
    csrf = await sign_in(client)
    r = await client.get("/ui/r/zones?tag=team-a")
    text = await r.text()
    assert "bulk-0" in text and "bulk-1" not in text and 'form="bulk"' in text
    # disable two zones at once
    r = await client.post("/ui/r/zones/bulk", data={"csrf": csrf, "action": "disable",
                                                    "keys": [zones[0]["uuid"], zones[1]["uuid"]]})
    text = await r.text()
    assert r.status == 200 and text.count("zstack-cli ChangeZoneState") == 2
    states = {z["name"]: z["state"] for z in await a.query("QueryZone")}
    assert states == {"bulk-0": "Disabled", "bulk-1": "Disabled", "bulk-2": "Enabled"}
    # again: not allowed in that state, nothing called
    r = await client.post("/ui/r/zones/bulk", data={"csrf": csrf, "action": "disable", "keys": [zones[0]["uuid"]]})
    text = await r.text()
    assert "not allowed in state Disabled" in text and "zstack-cli" not in text
    # destructive: confirmation first, then each deleted
    keys = [z["uuid"] for z in zones]
    r = await client.post("/ui/r/zones/bulk", data={"csrf": csrf, "action": "delete", "keys": keys})
    assert r.status == 200 and 'name="confirmed"' in await r.text()
    assert len(await a.query("QueryZone")) == 3
    r = await client.post("/ui/r/zones/bulk", data={"csrf": csrf, "action": "delete", "keys": keys,
                                                    "confirmed": "yes"})
    assert r.status == 200 and (await r.text()).count("zstack-cli DeleteZone") == 3
    assert await a.query("QueryZone") == []
    # bad input: no rows, unknown action, an action that needs input
    for data in ({"action": "disable"}, {"action": "nope", "keys": keys}):
        r = await client.post("/ui/r/zones/bulk", data={"csrf": csrf, **data})
        assert r.status == 400
    r = await client.post("/ui/r/global-configs/bulk", data={"csrf": csrf, "action": "update",
                                                             "keys": "identity:session.timeout"})
    assert r.status == 400


async def test_pages_carry_security_headers(client: TestClient) -> None:
    for path in ("/ui/login",):
        r = await client.get(path)
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert "script-src 'self';" in r.headers["Content-Security-Policy"]
    await sign_in(client)
    r = await client.get("/ui/")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
