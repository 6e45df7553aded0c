"""The router agent's HTTP handler over a stream (as on its virtio-serial port), driven by the host side's
client (vrouter.contract) through a unix socket: trust-on-first-use init, bearer token on every later call,
bad bodies refused with 400 naming the problem. Nothing is applied (no /apply with a valid state here)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import vrouter.contract as channel
from vrouter import agent

TOKEN = "a" * 48


class _Stream:
    def __init__(self, conn: socket.socket) -> None:
        self.rfile = conn.makefile("rb")
        self.wfile = conn.makefile("wb", buffering=0)


@pytest.fixture
def router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(agent, "ROUTER", agent.Router())
    path = str(tmp_path / "vr.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                agent.Handler(None, ("channel", 0), _Stream(conn))  # type: ignore[arg-type]

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path
    stop.set()
    srv.close()


def test_init_is_trust_on_first_use_then_the_token_is_required(router: str) -> None:
    assert channel.call(router, "/ping", {}, None)[0] == 401
    status, body = channel.call(router, "/init", {"uuid": "vr1", "token": TOKEN}, None)
    assert status == 200 and body == {"uuid": "vr1", "version": agent.VERSION, "generation": 0}
    assert channel.call(router, "/ping", {}, None)[0] == 401
    assert channel.call(router, "/ping", {}, "b" * 48)[0] == 401
    assert channel.call(router, "/ping", {}, TOKEN) == (200, {"uuid": "vr1", "version": agent.VERSION,
                                                              "generation": 0})
    # a second init must prove it knows the token
    status, body = channel.call(router, "/init", {"uuid": "vr2", "token": "c" * 48}, "b" * 48)
    assert status == 403 and "already initialised" in body["error"]
    assert channel.call(router, "/init", {"uuid": "vr1", "token": TOKEN}, TOKEN)[0] == 200
    assert channel.call(router, "/nope", {}, TOKEN)[0] == 404


def test_bad_bodies_are_refused_naming_the_problem(router: str) -> None:
    status, body = channel.call(router, "/init", {"uuid": "vr1", "token": "short"}, None)
    assert status == 400 and "at least 32 characters" in body["error"]
    channel.call(router, "/init", {"uuid": "vr1", "token": TOKEN}, None)
    status, body = channel.call(router, "/apply", {"generation": -1}, TOKEN)
    assert status == 400 and "generation" in body["error"] and "-1" in body["error"]


def test_wait_ready_inits_once_the_agent_answers(router: str) -> None:
    assert channel.wait_ready(router, "vr9", TOKEN, timeout=10)["uuid"] == "vr9"


def test_an_unreachable_channel_is_a_channel_error(tmp_path: Path) -> None:
    with pytest.raises(channel.ChannelError, match=r"no-such\.sock"):
        channel.call(str(tmp_path / "no-such.sock"), "/ping", {}, TOKEN, timeout=1)
