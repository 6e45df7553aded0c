"""Issue 18, security 4: a volume migration gives the source host a one-time transfer ticket of the
destination bound to that copy (files, sizes, lifetime), never the destination's agent token; and
``/localstorage/init`` accepts only paths under the agent's configured storage roots."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import test_controller_compute as tcc
from test_controller_compute import Env
from test_local_storage_api import _vm_with_data

from kvmagent.contract import storage as sc

env = tcc.env


async def _post(url: str, path: str, token: str, body: Any = None, headers: dict[str, str] | None = None,
                data: bytes | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(
            url + path, json=body if data is None else None, data=data,
            headers={"Authorization": f"Bearer {token}", **(headers or {})}) as r:
        return r.status, await r.json(content_type=None)


async def test_migration_uses_a_one_time_ticket_not_the_destination_token(env: Env, monkeypatch:
                                                                        pytest.MonkeyPatch) -> None:
    e = env
    vm, vol = await _vm_with_data(e)
    await e.call("DetachDataVolumeFromVm", uuid=vol["uuid"])
    src = next(a for a in e.agents if a.config.host_uuid == vm["hostUuid"])
    dst = next(a for a in e.agents if a is not src)
    dst_url = f"http://{dst.ip}:7070"
    ps_url = (await e.call("QueryPrimaryStorage", conditions=[]))["inventories"][0]["url"]
    agents = e.core.services["agents"]
    real_call = agents.call
    seen: dict[str, Any] = {}

    async def spy(host: dict[str, Any], cmd: Any, **kw: Any) -> Any:
        if not isinstance(cmd, sc.CopyToRemoteCmd):
            return await real_call(host, cmd, **kw)
        seen["cmd"] = cmd
        t = cmd.destToken
        size = Path(vol["installPath"]).stat().st_size  # noqa: ASYNC240
        # what the ticket opens: checkbits of the copy's files on that storage
        st, body = await _post(dst_url, sc.CheckBitsCmd.PATH, t, {"storagePath": ps_url,
                                                                  "paths": [vol["installPath"]]})
        seen["checkbits"] = (st, body)
        # ... and nothing else
        seen["other"] = [
            (await _post(dst_url, "/vm/vmsync", t, {}))[0],
            (await _post(dst_url, sc.InitCmd.PATH, t, {"storagePath": "/tmp/x", "primaryStorageUuid": "p"}))[0],
            (await _post(dst_url, sc.CheckBitsCmd.PATH, t, {"storagePath": ps_url, "paths": ["/etc/shadow"]}))[0],
            (await _post(dst_url, sc.DeleteBitsCmd.PATH, t, {"storagePath": ps_url,
                                                             "paths": [vol["installPath"]]}))[0],
            (await _post(dst_url, "/localstorage/receive", t, headers={
                "X-Zs-Path": vol["installPath"], "X-Zs-Size": str(size + 1)}, data=b""))[0],
            (await _post(dst_url, "/localstorage/receive", t, headers={
                "X-Zs-Path": str(Path(ps_url) / "evil"), "X-Zs-Size": "0"}, data=b""))[0]]
        raise RuntimeError("stop: the test only looks at what the source was given")

    monkeypatch.setattr(agents, "call", spy)
    st, body = await e.raw("LocalStorageMigrateVolume", volumeUuid=vol["uuid"], destHostUuid=dst.config.host_uuid)
    assert st >= 400, body
    cmd = seen["cmd"]
    assert cmd.destToken != dst.config.token and dst.config.token not in cmd.model_dump_json()
    assert seen["checkbits"][0] == 200, seen["checkbits"]
    assert seen["other"] == [401, 401, 403, 403, 403, 403], seen["other"]
    # revoked when the copy ended: the ticket opens nothing any more
    st, _ = await _post(dst_url, sc.CheckBitsCmd.PATH, cmd.destToken, {"storagePath": ps_url,
                                                                       "paths": [vol["installPath"]]})
    assert st == 401


async def test_init_only_under_storage_roots(env: Env, tmp_path: Path) -> None:
    a = env.agents[0]
    url = f"http://{a.ip}:7070"
    tag = uuid.uuid4().hex[:8]
    for bad in (f"/etc/zstack-evil-ps-{tag}", f"/root/ps-{tag}", f"{tmp_path}/../../etc/ps-{tag}"):
        try:
            st, body = await _post(url, sc.InitCmd.PATH, a.config.token, {"storagePath": bad,
                                                                          "primaryStorageUuid": "p1"})
            msg = str(body["error"]["message"]) if st != 200 else ""
            assert st == 400 and "storage_roots" in msg and "storagePath" in msg, body
            assert not Path(bad).resolve().exists()  # noqa: ASYNC240
        finally:  # what the old code created in a system directory is removed again
            if (Path(bad) / ".zstack-ps.json").exists():
                shutil.rmtree(Path(bad).resolve())  # noqa: ASYNC240
    st, _ = await _post(url, sc.InitCmd.PATH, a.config.token, {"storagePath": str(tmp_path / "ps2"),
                                                               "primaryStorageUuid": "p2"})
    assert st == 200
