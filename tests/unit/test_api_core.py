"""The API core: sessions, errors and codes, validation that writes nothing, jobs, OpenAPI, metrics."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from apiclient import Api
from pydantic import Field

from controller.api.context import ApiContext
from controller.api.http import CORE
from controller.api.messages import ApiMessage
from controller.api.registry import API, api
from controller.queues import WorkQueues


class _SleepMsg(ApiMessage):
    seconds: float = Field(ge=0, le=5)
    fail: bool = False


if "TestSleepJob" not in API:
    @api("TestSleepJob", _SleepMsg, job=True, queue=lambda m: "test-sleep")
    async def _sleep_job(ctx: ApiContext, msg: _SleepMsg) -> dict[str, Any]:
        """A job used by these tests: sleeps, then succeeds or fails."""
        await asyncio.sleep(msg.seconds)
        if msg.fail:
            from controller.errors import OperationError
            raise OperationError("asked to fail")
        return {"slept": msg.seconds}


async def _count(api: Api, name: str) -> int:
    return (await api.call(name, conditions=[], count=True))["total"]


async def test_login_accepts_clear_password_and_sha512_digest(api: Api) -> None:
    digest = hashlib.sha512(b"password").hexdigest()
    s, b = await api.raw("LogInByAccount", session=False, accountName="admin", password=digest)
    assert s == 200 and len(b["inventory"]["uuid"]) == 32
    s, b = await api.raw("LogInByAccount", session=False, accountName="admin", password="wrong")
    assert s == 401 and b["error"]["code"] == "ID.1000"
    assert "wrong account name or password" in b["error"]["details"]


async def test_no_session_and_expired_session(api: Api) -> None:
    s, b = await api.raw("QueryZone", session=False, conditions=[])
    assert s == 401 and b["error"]["code"] == "ID.1001" and "QueryZone" in b["error"]["details"]
    await api.call("UpdateGlobalConfig", category="identity", name="session.timeout", value="1")
    old = api.session
    await api.login()
    short = api.session
    await asyncio.sleep(1.2)
    s, b = await api.raw("QueryZone", conditions=[])
    assert s == 401 and b["error"]["code"] == "ID.1001" and "expired" in b["error"]["details"]
    api.session = old
    assert (await api.call("ValidateSession", sessionUuid=short))["validSession"] is False
    assert (await api.call("ValidateSession", sessionUuid=old))["validSession"] is True


async def test_logout_ends_the_session(api: Api) -> None:
    await api.call("LogOut")
    s, b = await api.raw("QueryZone", conditions=[])
    assert s == 401 and b["error"]["code"] == "ID.1001"


async def test_max_concurrent_sessions(api: Api) -> None:
    await api.call("UpdateGlobalConfig", category="identity", name="session.maxConcurrent", value="2")
    await api.raw("LogInByAccount", session=False, accountName="admin", password="password")
    s, b = await api.raw("LogInByAccount", session=False, accountName="admin", password="password")
    assert s == 401 and "session.maxConcurrent" in b["error"]["details"]


@pytest.mark.parametrize(("params", "status", "code", "words"), [
    ({}, 400, "SYS.1007", ["field[name]", "mandatory"]),
    ({"name": 5}, 400, "SYS.1007", ["field[name]", "5"]),
    ({"name": "z", "bogus": 1}, 400, "SYS.1007", ["field[bogus]", "not a parameter"]),
    ({"name": "z", "resourceUuid": "not-a-uuid"}, 400, "SYS.1007", ["resourceUuid", "not a uuid"]),
    ({"name": "z", "systemTags": ["userdata::x"]}, 400, "SYS.1007", ["no system tag matches", "ZoneVO"]),
])
async def test_bad_create_input_names_the_field_and_writes_nothing(
        api: Api, params: dict[str, Any], status: int, code: str, words: list[str]) -> None:
    s, b = await api.raw("CreateZone", **params)
    assert (s, b["success"], b["error"]["code"]) == (status, False, code)
    for w in words:
        assert w in b["error"]["details"]
    assert await _count(api, "QueryZone") == 0


async def test_unknown_uuid_invalid_value_unknown_api_and_bad_json(api: Api) -> None:
    s, b = await api.raw("UpdateZone", uuid="0" * 32, name="x")
    assert s == 404 and b["error"]["code"] == "SYS.1003" and "0" * 32 in b["error"]["details"]
    z = (await api.call("CreateZone", name="z"))["inventory"]
    s, b = await api.raw("ChangeZoneState", uuid=z["uuid"], stateEvent="explode")
    assert s == 400 and "stateEvent" in b["error"]["details"] and "explode" in b["error"]["details"]
    assert (await api.query("QueryZone", ("uuid", "=", z["uuid"])))[0]["state"] == "Enabled"
    s, b = await api.raw("CreateZones", name="x")
    assert s == 404 and b["error"]["code"] == "SYS.1008"
    r = await api.client.post("/v1/CreateZone", data=b"{not json", headers={"Authorization": f"OAuth {api.session}"})
    assert r.status == 400 and (await r.json())["error"]["code"] == "SYS.1007"


async def test_global_config_validation(api: Api) -> None:
    inv = (await api.call("UpdateGlobalConfig", category="vm", name="deletionPolicy", value="Never"))["inventory"]
    assert inv == {**inv, "category": "vm", "name": "deletionPolicy", "value": "Never", "defaultValue": "Delay"}
    for params, word in [({"category": "vm", "name": "nope", "value": "1"}, "no global config"),
                         ({"category": "vm", "name": "expungePeriod", "value": "0"}, ">= 1"),
                         ({"category": "vm", "name": "expungePeriod", "value": "soon"}, "integer"),
                         ({"category": "kvm", "name": "vm.consoleMode", "value": "rdp"}, "vnc")]:
        s, b = await api.raw("UpdateGlobalConfig", **params)
        assert s == 400 and b["error"]["code"] == "SYS.1007" and word in b["error"]["details"], b
    got = await api.query("QueryGlobalConfig", ("category", "=", "vm"), ("name", "=", "expungePeriod"))
    assert got[0]["value"] == "86400"
    names = {(c["category"], c["name"]) for c in await api.query("QueryGlobalConfig")}
    for k in [("vm", "expungeInterval"), ("image", "deletionPolicy"), ("volume", "expungePeriod"),
              ("kvm", "vm.consoleMode"), ("kvm", "vm.cpuMode"), ("host", "ping.interval"),
              ("identity", "session.timeout"), ("identity", "session.maxConcurrent")]:
        assert k in names


async def test_user_tags_keep_commas_quotes_and_newline_sequences_and_vanish_with_resource(api: Api) -> None:
    z = (await api.call("CreateZone", name="z"))["inventory"]
    value = "note: a,b \"quoted\" 'single' line1\\nline2 [x,y]"
    t = (await api.call("CreateUserTag", resourceType="ZoneVO", resourceUuid=z["uuid"], tag=value))["inventory"]
    assert t["tag"] == value and t["type"] == "User"
    dup = await api.call("CreateUserTag", resourceType="ZoneVO", resourceUuid=z["uuid"], tag=value)
    assert dup["inventory"] is None
    found = await api.query("QueryZone", ("__userTag__", "=", value))
    assert [x["uuid"] for x in found] == [z["uuid"]]
    s, b = await api.raw("CreateUserTag", resourceType="NopeVO", resourceUuid=z["uuid"], tag="x")
    assert s == 400 and "no resource type[NopeVO]" in b["error"]["details"]
    await api.call("DeleteZone", uuid=z["uuid"])
    assert await api.query("QueryUserTag", ("resourceUuid", "=", z["uuid"])) == []


async def test_job_waits_by_default_and_is_pollable_with_async(api: Api) -> None:
    b = await api.call("TestSleepJob", seconds=0.05)
    assert b["slept"] == 0.05
    r = await api.client.post("/v1/TestSleepJob?async=true", json={"seconds": 0.2},
                              headers={"Authorization": f"OAuth {api.session}"})
    assert r.status == 202
    job = (await r.json())["jobUuid"]
    for _ in range(50):
        j = await (await api.client.get(f"/v1/jobs/{job}", headers={"Authorization": f"OAuth {api.session}"})).json()
        if j["state"] != "Processing":
            break
        await asyncio.sleep(0.05)
    assert j["state"] == "Succeeded" and j["result"]["slept"] == 0.2
    s, b = await api.raw("TestSleepJob", seconds=0, fail=True)
    assert s == 409 and b["error"]["details"] == "asked to fail"


async def test_jobs_left_processing_fail_at_restart(api: Api) -> None:
    core = api.client.app[CORE]
    async with core.db.write() as tx:
        await tx.insert("Job", {"uuid": "a" * 32, "apiName": "X", "state": "Processing", "createDate": "2026"})
    assert await core.jobs.recover() == 1
    j = await core.jobs.get("a" * 32)
    assert j["state"] == "Failed" and "restarted" in j["result"]["error"]["details"]


async def test_work_queue_orders_calls_with_the_same_key_only() -> None:
    q = WorkQueues()
    order: list[str] = []

    async def step(name: str, delay: float) -> None:
        order.append(f"{name}+")
        await asyncio.sleep(delay)
        order.append(f"{name}-")

    await asyncio.gather(q.run("a", lambda: step("a1", 0.05)), q.run("a", lambda: step("a2", 0)),
                         q.run("b", lambda: step("b1", 0)))
    assert order.index("a1-") < order.index("a2+")
    assert order.index("b1-") < order.index("a1-")
    assert q.busy() == 0


async def test_200_concurrent_calls_lose_nothing(api: Api) -> None:
    z = (await api.call("CreateZone", name="target"))["inventory"]
    creates = [api.raw("CreateZone", name=f"z{i}") for i in range(120)]
    updates = [api.raw("UpdateZone", uuid=z["uuid"], description=f"d{i}") for i in range(60)]
    states = [api.raw("ChangeZoneState", uuid=z["uuid"], stateEvent=("disable", "enable")[i % 2]) for i in range(20)]
    results = await asyncio.gather(*creates, *updates, *states)
    assert all(s == 200 for s, _ in results), [b for s, b in results if s != 200][:3]
    assert await _count(api, "QueryZone") == 121
    final = (await api.query("QueryZone", ("uuid", "=", z["uuid"])))[0]
    assert final["description"].startswith("d") and final["state"] in ("Enabled", "Disabled")


async def test_openapi_health_and_metrics(api: Api) -> None:
    doc = await (await api.client.get("/v1/openapi.json")).json()
    zone = doc["components"]["schemas"]["CreateZone"]
    assert zone["required"] == ["name"]
    assert zone["properties"]["systemTags"]["anyOf"][0]["type"] == "array"
    assert "/v1/QueryVmInstance" in doc["paths"] and "/v1/LogInByAccount" in doc["paths"]
    assert (await api.client.get("/healthz")).status == 200
    assert (await api.client.get("/readyz")).status == 200
    text = await (await api.client.get("/metrics")).text()
    assert 'zstack_api_requests_total{api="LogInByAccount",status="200"}' in text
