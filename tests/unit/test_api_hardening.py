"""Issue #18 (security 1, 2, 9): bounded and escaped /metrics, session before body, body caps, query limits,
LogOut of one's own session only, login throttling, job table cleanup, validators that match whole values."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from apiclient import Api
from prometheus_client.parser import text_string_to_metric_families

from controller.api.http import CORE, MAX_BODY
from controller.api.registry import API
from controller.util import iso_in


async def _metrics(api: Api) -> str:
    r = await api.client.get("/metrics")
    assert r.status == 200
    return await r.text()


def _api_label_values(text: str) -> set[str]:
    values = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "api" in sample.labels:
                values.add(sample.labels["api"])
    return values


async def test_metrics_label_cannot_inject_lines(api: Api) -> None:
    r = await api.client.post("/v1/Foo%22%7D%201%0Afake_metric%7Ba%3D%22b%22%7D%2042%0A", json={})
    assert r.status == 404
    text = await _metrics(api)
    assert not any(line.startswith("fake_metric") for line in text.splitlines()), text
    # The whole page parses as Prometheus text, and no label value carries the path.
    values = _api_label_values(text)
    assert "unknown" in values and not any("fake_metric" in v for v in values)


async def test_metrics_series_are_bounded_by_registered_routes(api: Api) -> None:
    for i in range(40):
        assert (await api.client.post(f"/v1/NoSuchApi{i}", json={})).status == 404
        assert (await api.client.get(f"/nothing/here/{i}")).status == 404
    await api.call("QueryZone", conditions=[])
    values = _api_label_values(await _metrics(api))
    allowed = set(API) | {"unknown", "/v1/jobs/{uuid}", "/metrics", "/healthz", "/readyz", "/v1/openapi.json",
                          "/v1/agent/events"}
    assert values <= allowed, values - allowed
    assert "QueryZone" in values and "LogInByAccount" in values
    assert not any(v.startswith("NoSuchApi") or v.startswith("/nothing") for v in values)


async def test_unauthenticated_large_body_is_refused_before_parsing(api: Api) -> None:
    junk = b"{" + b"x" * (3 << 20)  # 3 MiB of invalid JSON: parsing it would answer 400, not 401
    r = await api.client.post("/v1/CreateZone", data=junk, headers={"Content-Type": "application/json"})
    assert r.status == 401 and (await r.json())["error"]["code"] == "ID.1001"
    r = await api.client.post("/v1/CreateZone", data=junk, headers={"Content-Type": "application/json",
                                                                     "Authorization": "OAuth " + "0" * 32})
    assert r.status == 401 and (await r.json())["error"]["code"] == "ID.1001"
    # APIs that need no session take only small bodies.
    r = await api.client.post("/v1/LogInByAccount", data=junk, headers={"Content-Type": "application/json"})
    assert r.status == 413 and (await r.json())["error"]["code"] == "SYS.1007"


async def test_body_over_the_cap_is_413_with_a_zstack_error(api: Api) -> None:
    big = b'{"name": "' + b"z" * (MAX_BODY + 10) + b'"}'
    r = await api.client.post("/v1/CreateZone", data=big, headers={"Content-Type": "application/json",
                                                                    "Authorization": f"OAuth {api.session}"})
    assert r.status == 413
    err = (await r.json())["error"]
    assert err["code"] == "SYS.1007" and str(MAX_BODY) in err["details"]
    assert (await api.call("QueryZone", conditions=[], count=True))["total"] == 0


async def test_session_in_body_still_works(api: Api) -> None:
    r = await api.client.post("/v1/QueryZone", json={"conditions": [], "session": {"uuid": api.session}})
    assert r.status == 200


@pytest.mark.parametrize(("field", "value"), [("limit", 2 ** 70), ("start", 2 ** 70), ("limit", 10 ** 9),
                                              ("limit", -1)])
async def test_huge_query_limit_or_start_is_a_clear_400(api: Api, field: str, value: int) -> None:
    s, b = await api.raw("QueryZone", conditions=[], **{field: value})
    assert s == 400, b
    assert b["error"]["code"] == "SYS.1007" and f"field[{field}]" in b["error"]["details"]


async def test_logout_needs_its_own_session(api: Api) -> None:
    other = (await api.call("LogInByAccount", session=False, accountName="admin",
                            password="password"))["inventory"]["uuid"]
    # Without a session: nothing ends.
    s, b = await api.raw("LogOut", session=False, sessionUuid=other)
    assert s == 401 and b["error"]["code"] == "ID.1001"
    assert (await api.call("ValidateSession", sessionUuid=other))["validSession"] is True
    # With a session, naming another one: refused, nothing ends.
    s, b = await api.raw("LogOut", sessionUuid=other)
    assert s == 403 and b["error"]["code"] == "ID.1002"
    assert (await api.call("ValidateSession", sessionUuid=other))["validSession"] is True
    assert (await api.call("ValidateSession", sessionUuid=api.session))["validSession"] is True
    # Its own session, by header (and naming it): ends that one only.
    mine = api.session
    await api.call("LogOut", sessionUuid=mine)
    api.session = other
    assert (await api.call("ValidateSession", sessionUuid=mine))["validSession"] is False
    assert (await api.call("ValidateSession", sessionUuid=other))["validSession"] is True


async def test_repeated_login_failures_are_throttled(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    statuses = []
    for _ in range(7):
        s, _b = await api.raw("LogInByAccount", session=False, accountName="admin", password="Wr0ngSecret!")
        statuses.append(s)
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    s, b = await api.raw("LogInByAccount", session=False, accountName="admin", password="password")
    assert s == 429 and b["error"]["code"] == "ID.1004" and "identity/login" in b["error"]["details"]
    audit = [r.getMessage() for r in caplog.records if "login" in r.getMessage().lower()]
    assert any("admin" in m and "127.0.0.1" in m for m in audit), audit
    assert not any("Wr0ngSecret!" in r.getMessage() for r in caplog.records)
    # Another account from the same source is not locked yet; after enough failures the source is.
    s, _b = await api.raw("LogInByAccount", session=False, accountName="nobody", password="x")
    assert s == 401
    # The window passes: the account can log in again.
    await api.call("UpdateGlobalConfig", category="identity", name="login.failureWindow", value="1")
    await asyncio.sleep(1.1)
    s, _b = await api.raw("LogInByAccount", session=False, accountName="admin", password="password")
    assert s == 200


async def test_login_failures_per_source_are_throttled(api: Api) -> None:
    await api.call("UpdateGlobalConfig", category="identity", name="login.maxFailuresPerSource", value="3")
    for i in range(3):
        s, _b = await api.raw("LogInByAccount", session=False, accountName=f"user{i}", password="x")
        assert s == 401
    s, b = await api.raw("LogInByAccount", session=False, accountName="admin", password="password")
    assert s == 429 and "127.0.0.1" in b["error"]["details"]


async def test_finished_jobs_are_cleaned_by_a_background_task(api: Api) -> None:
    core = api.client.app[CORE]
    async with core.db.write() as tx:
        for i, finished in enumerate((iso_in(-10 * 86400), iso_in(-10), None)):
            await tx.insert("Job", {"uuid": f"{i:032x}", "apiName": "X", "state": "Processing" if finished is None
                                    else "Succeeded", "createDate": iso_in(-20 * 86400),
                                    "finishedDate": finished})
    assert "job-cleanup" in core.tasks.names()
    await api.call("UpdateGlobalConfig", category="api", name="job.retention", value="3600")
    await api.call("UpdateGlobalConfig", category="api", name="job.cleanup.interval", value="1")
    for _ in range(40):
        left = {r["uuid"] for r in await core.db.fetchall("SELECT uuid FROM Job")}
        if f"{0:032x}" not in left:
            break
        await asyncio.sleep(0.1)
    assert left == {f"{1:032x}", f"{2:032x}"}


@pytest.mark.parametrize("name", ["eth0\n", "eth0\r", "eth 0", "a" * 16, ""])
async def test_interface_names_must_match_whole(api: Api, name: str) -> None:
    zone = await api.inv("CreateZone", name="z")
    s, b = await api.raw("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface=name)
    assert s == 400 and b["error"]["code"] == "SYS.1007", b
    assert (await api.call("QueryL2Network", conditions=[], count=True))["total"] == 0


@pytest.mark.parametrize("check", ["host", "domain", "storage_id", "metadata_version"])
def test_validators_refuse_a_trailing_newline(check: str) -> None:
    from controller.compute.hosts import check_management_ip
    from controller.errors import InvalidArgument
    from controller.tags.service import is_domain
    from flatnet import mdlayout
    from storage.layout import check_id

    if check == "host":
        check_management_ip("host1.example.com")
        with pytest.raises(InvalidArgument):
            check_management_ip("host1.example.com\n")
    elif check == "domain":
        assert is_domain("example.com") and not is_domain("example.com\n")
    elif check == "storage_id":
        check_id("volume", "abc-1")
        with pytest.raises(Exception, match="not a valid identifier"):
            check_id("volume", "abc-1\n")
    else:
        from flatnet.model import UserdataSpec

        spec = UserdataSpec(vm_uuid="v", l3_uuid="l", vm_ip="10.0.0.5")
        assert mdlayout.resolve(spec, "/latest/meta-data")[0] == 200
        assert mdlayout.resolve(spec, "/latest\n/meta-data") == mdlayout.NOT_FOUND


async def test_slow_headers_are_cut_off(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestServer

    from controller.app import create_app, server_settings
    from controller.config import ControllerConfig

    config = ControllerConfig(db_path=str(tmp_path / "c.db"), log_dir=str(tmp_path / "log"), header_timeout=0.5)
    server = TestServer(create_app(config))
    await server.start_server(**server_settings(config))
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"POST /v1/GetVersion HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        await writer.drain()
        t0 = asyncio.get_running_loop().time()
        data = await asyncio.wait_for(reader.read(), 5)
        assert data == b"" and asyncio.get_running_loop().time() - t0 < 2
        writer.close()
        # A client that sends its request in time is served.
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        await server.close()
