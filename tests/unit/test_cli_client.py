"""zstack-cli end to end against a fake controller: a stdlib HTTP server on a loopback port 0.

The fake speaks the controller's HTTP contract (``POST /v1/<Api>``, OAuth session header, ZStack error
bodies, ``GET /v1/openapi.json``) and records every request, so the tests check what the CLI really sends,
prints, stores and how it exits.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import socket
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller.cli.app import Cli
from controller.cli.client import make_url
from controller.cli.main import main
from controller.cli.shell import Shell, completions, mask_passwords

SESSION = "b0e5ff1f6a5d4a1f9d1e3d2c7a9b8c01"
EXPIRED = "0d0c0b0a09080706050403020100ffee"
ADMIN_DIGEST = hashlib.sha512(b"password").hexdigest()
HOSTS = [{"uuid": "402f8304a50c410486e023512492316b", "name": "host1", "managementIp": "192.168.200.187"}]


def _schema(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": []}


def _openapi(version: str, extra_api: str | None = None) -> dict[str, Any]:
    apis = {
        "LogInByAccount": _schema({"accountName": {"type": "string"}, "password": {"type": "string"}}),
        "LogOut": _schema({"sessionUuid": {"type": "string"}}),
        "QueryHost": _schema({"conditions": {"type": "array", "items": {"type": "object"}}}),
        "QueryL3Network": _schema({"conditions": {"type": "array", "items": {"type": "object"}}}),
        "CreateZone": _schema({"name": {"type": "string"}, "description": {"type": "string"},
                               "systemTags": {"anyOf": [{"type": "array", "items": {"type": "string"}},
                                                        {"type": "null"}]}}),
        "SetVmBootOrder": _schema({"uuid": {"type": "string"}, "bootOrder": {"type": "array",
                                                                             "items": {"type": "string"}}}),
        # a list parameter 1.0's fallback table does not know: only the OpenAPI schema says it is a list
        "AddDnsToL3Network": _schema({"l3NetworkUuid": {"type": "string"},
                                      "dnsServers": {"type": "array", "items": {"type": "string"}}}),
    }
    if extra_api:
        apis[extra_api] = _schema({"uuid": {"type": "string"}})
    paths = {f"/v1/{n}": {"post": {"requestBody": {"content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{n}"}}}}}} for n in apis}
    return {"openapi": "3.1.0", "info": {"version": version}, "paths": paths, "components": {"schemas": apis}}


class FakeController(ThreadingHTTPServer):
    """Records requests; answers like the controller contract says."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.openapi: dict[str, Any] | None = _openapi("0.1.0")
        self.openapi_fetches = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self, api: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["api"] == api]


def _error(status: int, code: str, description: str, details: str = "") -> tuple[int, dict[str, Any]]:
    return status, {"success": False, "error": {"code": code, "description": description, "details": details}}


def _answer(api: str, body: dict[str, Any], auth: str | None) -> tuple[int, dict[str, Any]]:
    if api == "LogInByAccount":
        if body == {"accountName": "admin", "password": ADMIN_DIGEST}:
            return 200, {"success": True, "inventory": {"uuid": SESSION, "accountUuid": "36c27e8f"}}
        return _error(401, "ID.1000", "authentication error", "wrong account name or password")
    if api == "LogOut":
        return 200, {"success": True}
    if auth == f"OAuth {EXPIRED}":
        return _error(401, "ID.1001", "invalid session", "Session expired")
    if auth != f"OAuth {SESSION}":
        return _error(401, "ID.1001", "invalid session", "session of message is null")
    if api == "QueryHost":
        return 200, {"success": True, "inventories": HOSTS, "warnings": ["host1 is slow to answer"]}
    if api == "CreateZone" and body.get("name") == "bad":
        return _error(400, "SYS.1007", "One or more API argument is invalid", "name[bad] is reserved")
    if api == "Boom":
        return 500, {}
    return 200, {"success": True, "inventory": {"received": body}}


class _Handler(BaseHTTPRequestHandler):
    server: FakeController

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/openapi.json" and self.server.openapi is not None:
            self.server.openapi_fetches += 1
            self._send(200, self.server.openapi)
        else:
            self._send(404, {"success": False})

    def do_POST(self) -> None:
        api = self.path.removeprefix("/v1/")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization")
        self.server.requests.append({"api": api, "body": body, "auth": auth})
        self._send(*_answer(api, body, auth))


@pytest.fixture
def controller() -> Iterator[FakeController]:
    server = FakeController()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="fake-controller", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, controller: FakeController) -> Path:
    monkeypatch.setenv("ZSTACK_CLI_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("ZSTACK_URL", controller.url)
    return tmp_path / "cli-home"


def _login() -> None:
    assert main(["LogInByAccount", "accountName=admin", "password=password"]) == 0


# ------------------------------------------------------------------ sessions and output


def test_login_writes_private_session_file_and_later_commands_use_it(
    home: Path, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    _login()
    assert controller.calls("LogInByAccount")[0]["body"]["password"] == ADMIN_DIGEST
    assert controller.calls("LogInByAccount")[0]["auth"] is None
    session_file = home / "session"
    assert json.loads(session_file.read_text()) == {controller.url: SESSION}
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    capsys.readouterr()

    assert main(["QueryHost"]) == 0
    out, err = capsys.readouterr()
    assert controller.calls("QueryHost")[0] == {"api": "QueryHost", "body": {"conditions": []},
                                                "auth": f"OAuth {SESSION}"}
    assert out == json.dumps({"inventories": HOSTS, "success": True}, indent=4, sort_keys=True) + "\n"
    assert out.startswith('{\n    "inventories": [\n        {\n            "managementIp"')
    assert err == "warning: host1 is slow to answer\n"


def test_not_logged_in_exits_2_with_hint_and_sends_nothing(
    home: Path, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["QueryHost"]) == 2
    assert "not logged in: run LogInByAccount accountName=admin password=..." in capsys.readouterr().err
    assert controller.requests == []


def test_wrong_password_is_an_api_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["LogInByAccount", "accountName=admin", "password=nope"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: LogInByAccount failed (HTTP 401, ID.1000): authentication error: "
                   "wrong account name or password\n")
    assert not (home / "session").exists()


def test_expired_session_is_forgotten_with_the_login_hint(
    home: Path, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    home.mkdir(parents=True)
    (home / "session").write_text(json.dumps({controller.url: EXPIRED, "http://other:8080": SESSION}))
    assert main(["QueryHost"]) == 2
    err = capsys.readouterr().err
    assert "QueryHost failed (HTTP 401, ID.1001): invalid session: Session expired" in err
    assert "not logged in: run LogInByAccount" in err
    assert json.loads((home / "session").read_text()) == {"http://other:8080": SESSION}


def test_logout_uses_current_session_and_deletes_session_file(home: Path, controller: FakeController) -> None:
    _login()
    assert main(["LogOut"]) == 0
    assert controller.calls("LogOut")[0]["body"] == {"sessionUuid": SESSION}
    assert not (home / "session").exists()
    assert main(["LogOut"]) == 0  # nothing to log out: still fine
    assert len(controller.calls("LogOut")) == 1


def test_api_error_prints_one_paragraph_and_exits_1(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _login()
    capsys.readouterr()
    assert main(["CreateZone", "name=bad"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("error: CreateZone failed (HTTP 400, SYS.1007): One or more API argument is invalid: "
                   "name[bad] is reserved\n")


def test_error_without_zstack_body_is_still_clear(
    home: Path, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    _login()
    capsys.readouterr()
    assert main(["Boom"]) == 2  # not in the schema: refused before any call
    assert '"Boom" is not an API' in capsys.readouterr().err
    assert controller.calls("Boom") == []
    controller.openapi = _openapi("0.1.1", extra_api="Boom")
    assert main(["--refresh-schema", "Boom", "uuid=x"]) == 1
    assert capsys.readouterr().err == (
        "error: Boom failed (HTTP 500, HTTP.500): the controller gave no ZStack error body: {}\n")


# ------------------------------------------------------------------ connection problems and usage


def test_connection_refused_exits_2_with_start_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a loopback port that nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ZSTACK_CLI_HOME", str(tmp_path))
    monkeypatch.delenv("ZSTACK_URL", raising=False)
    assert main(["-H", "127.0.0.1", "-p", str(port), "QueryHost"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: cannot reach the ZStack-Py controller at http://127.0.0.1:{port}: "
                   "connection refused; start it with `zstack-ctl start`\n")
    assert "Traceback" not in err


def test_usage_errors_exit_2(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _login()
    capsys.readouterr()
    assert main(["CreateZone", "name"]) == 2
    assert 'error: "name" is not a parameter: expected name=value' in capsys.readouterr().err
    assert main(["CreateZon", "name=z"]) == 2
    assert '"CreateZon" is not an API; did you mean CreateZone?' in capsys.readouterr().err
    assert main(["--bogus-option"]) == 2


def test_url_precedence() -> None:
    assert make_url(None, None, None) == "http://127.0.0.1:8080"
    assert make_url(None, None, "http://10.0.0.1:9090/") == "http://10.0.0.1:9090"
    assert make_url("10.0.0.2", None, "http://10.0.0.1:9090") == "http://10.0.0.2:8080"
    assert make_url(None, 8081, None) == "http://127.0.0.1:8081"


# ------------------------------------------------------------------ what is sent


def test_seed_fields_quirk_and_one_argument_form(home: Path, controller: FakeController) -> None:
    _login()
    line = "QueryL3Network fields=l2NetworkUuid, uuid=1a82c2691978476fa6cefa36bb9d4bfd"
    assert main(shlex.split(line)) == 0
    assert main([line]) == 0  # the whole line as one argument is split like the shell does
    expected = {"fields": ["l2NetworkUuid"],
                "conditions": [{"name": "uuid", "op": "=", "value": "1a82c2691978476fa6cefa36bb9d4bfd"}]}
    assert [c["body"] for c in controller.calls("QueryL3Network")] == [expected, expected]


def test_openapi_cache_is_written_keyed_by_version_and_reused(home: Path, controller: FakeController) -> None:
    _login()
    assert main(["AddDnsToL3Network", "l3NetworkUuid=l3", "dnsServers=8.8.8.8,1.1.1.1"]) == 0
    assert controller.calls("AddDnsToL3Network")[0]["body"] == {"l3NetworkUuid": "l3",
                                                                "dnsServers": ["8.8.8.8", "1.1.1.1"]}
    cache = json.loads((home / "api-cache.json").read_text())
    assert cache["controllers"] == {controller.url: "0.1.0"}
    assert cache["schemas"]["0.1.0"]["AddDnsToL3Network"]["dnsServers"]["type"] == "array"
    assert main(["SetVmBootOrder", "uuid=vm", "bootOrder=HardDisk,CdRom"]) == 0
    assert controller.calls("SetVmBootOrder")[0]["body"]["bootOrder"] == ["HardDisk", "CdRom"]
    assert controller.openapi_fetches == 1


def test_stale_cache_is_refreshed_once_for_an_unknown_api(home: Path, controller: FakeController) -> None:
    _login()
    assert controller.openapi_fetches == 1
    controller.openapi = _openapi("0.2.0", extra_api="RecoverVmInstance")
    assert main(["RecoverVmInstance", "uuid=8c4c4c0bbac7441fb056d0d6e2168996"]) == 0
    assert controller.openapi_fetches == 2
    cache = json.loads((home / "api-cache.json").read_text())
    assert cache["controllers"][controller.url] == "0.2.0" and set(cache["schemas"]) == {"0.1.0", "0.2.0"}
    assert main(["NoSuchApi"]) == 2
    assert controller.openapi_fetches == 3  # one refetch per unknown name, never a loop


def test_without_openapi_the_1_0_table_still_splits_lists(
    home: Path, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    controller.openapi = None  # GET /v1/openapi.json -> 404
    _login()
    assert "using 1.0's parameter table" in capsys.readouterr().err
    assert main(["SetVmBootOrder", "uuid=vm", "bootOrder=HardDisk,CdRom"]) == 0
    assert controller.calls("SetVmBootOrder")[0]["body"]["bootOrder"] == ["HardDisk", "CdRom"]
    assert not (home / "api-cache.json").exists()


def test_loopback_controller_bypasses_proxy_variables(
    home: Path, controller: FakeController, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")  # would refuse every connection
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    _login()
    assert len(controller.calls("LogInByAccount")) == 1


def test_cache_survives_corruption(home: Path, controller: FakeController) -> None:
    home.mkdir(parents=True)
    (home / "api-cache.json").write_text("{not json")
    _login()
    assert json.loads((home / "api-cache.json").read_text())["controllers"] == {controller.url: "0.1.0"}


def test_completion_from_the_cache(home: Path, controller: FakeController) -> None:
    _login()
    cli = Cli(controller.url, home)
    schema = cli.schema_or_none()
    assert schema is not None and controller.openapi_fetches == 1  # served from api-cache.json
    assert completions(schema, "Set", 0, "Set") == ["SetVmBootOrder"]
    assert completions(schema, "", 0, "he") == ["help"]
    assert completions(schema, "SetVmBootOrder uuid=x b", 21, "b") == ["bootOrder="]
    assert completions(schema, "SetVmBootOrder uuid=x ", 22, "") == ["bootOrder="]  # uuid already given
    assert "limit=" in completions(schema, "QueryHost ", 10, "")
    assert completions(schema, "help Set", 5, "Set") == ["SetVmBootOrder"]
    assert completions(schema, "SetVmBootOrder bootOrder=Ha", 15, "bootOrder=Ha") == []


# ------------------------------------------------------------------ the shell's built-ins


def test_shell_lines_and_builtins(
    home: Path, controller: FakeController, capsys: pytest.CaptureFixture[str]
) -> None:
    shell = Shell(Cli(controller.url, home, ask_password=lambda prompt: "password"), home / "history")
    assert shell.handle("login") == 0  # login convenience: admin + prompted password
    assert controller.calls("LogInByAccount")[0]["body"] == {"accountName": "admin", "password": ADMIN_DIGEST}
    assert shell.handle("CreateZone name=z1 description='my zone' systemTags=hostname::a,staticIp::x::y") == 0
    assert controller.calls("CreateZone")[0]["body"] == {
        "name": "z1", "description": "my zone", "systemTags": ["hostname::a", "staticIp::x::y"]}
    capsys.readouterr()
    assert shell.handle("help SetVmBootOrder") == 0
    help_text = capsys.readouterr().out
    assert "bootOrder" in help_text and "list of string" in help_text
    assert shell.handle("help") == 0 and "QueryHost" in capsys.readouterr().out
    assert shell.handle("") == 0
    assert shell.handle("more x") == 2
    assert shell.handle("quit") is None and shell.handle("exit") is None


def test_passwords_are_masked_for_history() -> None:
    assert mask_passwords("LogInByAccount accountName=admin password=secret") == (
        "LogInByAccount accountName=admin password=****")
    assert mask_passwords("login admin 'x'") == "login admin 'x'"
    assert mask_passwords("CreateAccount name=a password='a b'") == "CreateAccount name=a password=****"


def test_json_output_is_the_reply_sorted(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _login()
    capsys.readouterr()
    assert main(["CreateZone", "name=z1", "description=zone one"]) == 0
    assert capsys.readouterr().out == (
        '{\n    "inventory": {\n        "received": {\n            "description": "zone one",\n'
        '            "name": "z1"\n        }\n    },\n    "success": true\n}\n')
