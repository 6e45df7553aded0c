"""The console WebSocket proxy: a one-time token bound to the session and the VM; missing, expired, reused and
foreign tokens are refused; a good one pumps bytes both ways to the VNC server (a TCP server in the test)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.app import create_app
from controller.config import ControllerConfig
from controller.ui.console import tokens


@pytest.fixture
async def client(controller_config: ControllerConfig) -> AsyncIterator[TestClient]:
    app = create_app(controller_config)
    async with TestClient(TestServer(app)) as c:
        yield c


async def login(client: TestClient) -> str:
    """Sign in; returns the session uuid (read from the cookie jar, as the controller set it)."""
    r = await client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
    r = await client.post("/ui/login", data={"csrf": token, "account": "admin", "password": "password"},
                          allow_redirects=False)
    assert r.status == 303
    return next(c.value for c in client.session.cookie_jar if c.key == "zs_session")


@pytest.fixture
async def vnc_server() -> AsyncIterator[tuple[str, int, list[bytes]]]:
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await writer.drain()
        data = await reader.read(100)
        got.append(data)
        writer.write(b"echo:" + data)
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield "127.0.0.1", port, got


async def refused(client: TestClient, url: str) -> str:
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await client.ws_connect(url)
    assert e.value.status == 403
    return str(e.value)


async def test_good_token_pumps_bytes_and_is_one_time(client: TestClient, vnc_server: tuple) -> None:
    host, port, got = vnc_server
    sess = await login(client)
    t = tokens(client.app).issue(sess, "vm1", host, port)
    ws = await client.ws_connect(f"/ui/console/ws?vm=vm1&token={t}", protocols=("binary",))
    assert ws.protocol == "binary"
    assert (await ws.receive_bytes(timeout=5)) == b"RFB 003.008\n"
    await ws.send_bytes(b"RFB 003.008\n")
    assert (await ws.receive_bytes(timeout=5)) == b"echo:RFB 003.008\n"
    assert got == [b"RFB 003.008\n"]
    await ws.close()
    # the same token again: refused
    await refused(client, f"/ui/console/ws?vm=vm1&token={t}")


async def test_missing_expired_foreign_tokens_are_refused(client: TestClient, vnc_server: tuple) -> None:
    host, port, got = vnc_server
    sess = await login(client)
    tk = tokens(client.app)
    await refused(client, "/ui/console/ws?vm=vm1")
    await refused(client, "/ui/console/ws?vm=vm1&token=made-up")
    # bound to another VM
    t = tk.issue(sess, "vm1", host, port)
    await refused(client, f"/ui/console/ws?vm=vm2&token={t}")
    await refused(client, f"/ui/console/ws?vm=vm1&token={t}")  # a refused token is spent too
    # bound to another session
    t = tk.issue("0" * 32, "vm1", host, port)
    await refused(client, f"/ui/console/ws?vm=vm1&token={t}")
    # expired
    tk.ttl = 0.05
    t = tk.issue(sess, "vm1", host, port)
    await asyncio.sleep(0.1)
    await refused(client, f"/ui/console/ws?vm=vm1&token={t}")
    tk.ttl = 30
    # no session cookie at all (signed out): refused even with a fresh token
    t = tk.issue(sess, "vm1", host, port)
    client.session.cookie_jar.clear()
    await refused(client, f"/ui/console/ws?vm=vm1&token={t}")
    assert got == []  # nothing ever reached the VNC server


async def test_console_page_needs_a_running_vm(client: TestClient) -> None:
    await login(client)
    r = await client.get("/ui/vms/" + "a" * 32 + "/console")
    assert r.status == 404
    assert "SYS.1003" in await r.text()
    assert not tokens(client.app)._grants


async def test_foreign_origin_is_refused(client: TestClient, vnc_server: tuple) -> None:
    host, port, got = vnc_server
    sess = await login(client)
    t = tokens(client.app).issue(sess, "vm1", host, port)
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await client.ws_connect(f"/ui/console/ws?vm=vm1&token={t}", headers={"Origin": "http://evil.example"})
    assert e.value.status == 403
    assert got == []
