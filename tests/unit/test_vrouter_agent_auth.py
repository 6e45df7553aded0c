"""The router agent's HTTP handler over a stream (as on its virtio-serial port), driven by the host side's
client (vrouter.contract) through a unix socket: trust-on-first-use init, bearer token on every later call,
bad bodies refused with 400 naming the problem. Nothing is applied (no /apply with a valid state here).
The code push (/upgrade) runs on a copy of the package in a temporary directory; the agent's exit (busybox
init respawns it in the router) is replaced by building a new Router from the same directories."""

from __future__ import annotations

import re
import shutil
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
    assert status == 200 and body == {"uuid": "vr1", "version": agent.VERSION, "generation": 0,
                                      "digest": agent.ROUTER.digest}
    assert channel.call(router, "/ping", {}, None)[0] == 401
    assert channel.call(router, "/ping", {}, "b" * 48)[0] == 401
    assert channel.call(router, "/ping", {}, TOKEN) == (200, {"uuid": "vr1", "version": agent.VERSION,
                                                              "generation": 0, "digest": agent.ROUTER.digest})
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


def _package_copy(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg" / "vrouter"
    shutil.copytree(agent.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"stale")
    return pkg


def test_upgrade_replaces_the_code_then_the_restarted_agent_keeps_its_identity(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg, state = _package_copy(tmp_path), tmp_path / "run"
    (pkg / "gone.py").write_text("# a module the controller's package no longer has\n")
    r = agent.Router(state, package=pkg)
    restarts: list[int] = []
    monkeypatch.setattr(r, "restart", lambda: restarts.append(1))
    monkeypatch.setattr(agent, "ROUTER", r)
    r.init({"uuid": "vr1", "token": TOKEN}, None)
    assert (state / "identity.json").stat().st_mode & 0o777 == 0o600
    files = channel.code_files(agent.PACKAGE)
    files["__init__.py"] = files["__init__.py"].replace(f'VERSION = "{agent.VERSION}"', 'VERSION = "9.9.9"')
    digest = channel.code_digest(files)
    assert digest != r.digest
    srv, served = _serve(tmp_path / "vr.sock")
    status, body = channel.call(str(tmp_path / "vr.sock"), "/upgrade", {"files": files, "digest": digest}, TOKEN)
    served.join(10)   # the handler restarts the agent after its reply is sent
    srv.close()
    assert (status, body) == (200, {"digest": digest, "restarting": True}) and restarts == [1]
    assert channel.code_files(pkg) == files and not (pkg / "__pycache__").exists()
    again = agent.Router(state, package=pkg)   # what init respawns: same identity, the new code's digest
    assert (again.uuid, again.token, again.digest) == ("vr1", TOKEN, digest)
    assert again.authorized(f"Bearer {TOKEN}")


def test_upgrade_refuses_bad_pushes_and_changes_nothing(tmp_path: Path) -> None:
    pkg = _package_copy(tmp_path)
    r = agent.Router(None, package=pkg)
    before = channel.code_files(pkg)
    good = channel.code_files(agent.PACKAGE)
    broken = {**good, "agent.py": good["agent.py"] + "\ndef (:\n"}
    cases = [({"files": {}, "digest": "x"}, "files: expected"),
             ({"files": {**good, "../evil.py": "x"}, "digest": "x"}, "not module file names"),
             ({"files": {"render.py": good["render.py"]}, "digest": "x"}, "missing"),
             ({"files": good, "digest": "0" * 64}, "is not the digest"),
             ({"files": broken, "digest": channel.code_digest(broken)}, "agent.py does not compile")]
    for body, text in cases:
        with pytest.raises(ValueError, match=re.escape(text)):
            r.upgrade(body)
    assert channel.code_files(pkg) == before and (pkg / "__pycache__").exists()


def _serve(path: Path) -> tuple[socket.socket, threading.Thread]:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def one() -> None:
        conn, _ = srv.accept()
        with conn:
            agent.Handler(None, ("channel", 0), _Stream(conn))  # type: ignore[arg-type]

    t = threading.Thread(target=one, daemon=True)
    t.start()
    return srv, t
