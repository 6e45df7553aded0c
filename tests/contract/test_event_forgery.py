"""Issue 18, security 3: a host's agent token may report only on VMs the database places on that host."""

from __future__ import annotations

from typing import Any

from test_controller_compute import Env, _agent, _domains

from controller.compute import extensions, placement, tracer


async def _post(env: Env, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    r = await env.client.post("/v1/agent/events", json=body, headers={"Authorization": f"Bearer {token}"})
    return r.status, await r.json()


async def test_other_hosts_token_cannot_move_a_vm(env: Env) -> None:
    vm = (await env.create_vm("victim"))[1]["inventory"]
    a = _agent(env, vm["hostUuid"])
    b = next(x for x in env.agents if x is not a)
    pushed: list[dict[str, Any]] = []

    async def spy(core: Any, **kw: Any) -> None:
        pushed.append(kw)

    extensions.register("vm.state_changed", spy)
    try:
        before = await env.vm(vm["uuid"])
        for state in ("Running", "Stopped", "Unknown"):
            status, body = await _post(env, b.config.token, {"hostUuid": b.config.host_uuid,
                                                             "vmUuid": vm["uuid"], "vmState": state})
            assert status == 403 and body["error"]["code"] == "ID.1002", body
            assert vm["uuid"] in body["error"]["details"]
        after = await env.vm(vm["uuid"])
        assert (after["state"], after["hostUuid"]) == (before["state"], before["hostUuid"])
        assert (after["state"], after["hostUuid"]) == ("Running", a.config.host_uuid)
        assert pushed == [] and vm["uuid"] not in await _domains(b)
        # a periodic sync whose reply claims the VM runs on B is refused the same way
        assert await tracer.full_sync(env.core, b.config.host_uuid, {vm["uuid"]: "Running"}) == 0
        assert (await env.vm(vm["uuid"]))["hostUuid"] == a.config.host_uuid and pushed == []
        # the VM's own host may report (it is placed there); a host told to receive it may too
        status, _ = await _post(env, a.config.token, {"hostUuid": a.config.host_uuid, "vmUuid": vm["uuid"],
                                                      "vmState": "Running"})
        assert status == 200
        async with placement.expect_on_host(env.core, b.config.host_uuid, vm["uuid"]):
            status, _ = await _post(env, b.config.token, {"hostUuid": b.config.host_uuid,
                                                          "vmUuid": vm["uuid"], "vmState": "Running"})
            assert status == 200
        assert (await env.vm(vm["uuid"]))["hostUuid"] == b.config.host_uuid
        status, _ = await _post(env, a.config.token, {"hostUuid": a.config.host_uuid, "vmUuid": vm["uuid"],
                                                      "vmState": "Running"})
        assert status == 403  # A is no longer the VM's host and is not expected
    finally:
        extensions.HOOKS["vm.state_changed"].remove(spy)
