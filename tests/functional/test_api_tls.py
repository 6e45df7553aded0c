"""The controller API over TLS (``api_tls``), the real server process: with the CA's certificate or an
operator's; zstack-cli's client and zstack-ctl verify it, a client without the CA and plain HTTP get nowhere."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import ctl, pki
from controller.cli.client import Client, ConnectionFailure
from controller.config import ControllerConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp: Path, **extra: object) -> Iterator[ControllerConfig]:
    data = {"db_path": str(tmp / "db" / "c.db"), "log_dir": str(tmp / "log"), "listen_host": "127.0.0.1",
            "port": _free_port(), "api_tls": True, **extra}
    (tmp / "controller.json").write_text(json.dumps(data))
    cfg = ControllerConfig.load(tmp / "controller.json")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = open(tmp / "server.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "controller.server", "--config", str(tmp / "controller.json")],
                            stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not ctl._healthy(cfg):
            assert proc.poll() is None, (tmp / "server.out").read_text()
            assert time.monotonic() < deadline, "the controller did not come up:\n" + (tmp / "server.out").read_text()
            time.sleep(0.2)
        yield cfg
    finally:
        proc.terminate()
        proc.wait(20)
        out.close()


@pytest.fixture
def with_ca(tmp_path: Path) -> Iterator[ControllerConfig]:
    yield from _serve(tmp_path)


def test_api_over_tls_with_the_controllers_ca(with_ca: ControllerConfig, tmp_path: Path) -> None:
    cfg = with_ca
    ca = str(tmp_path / "db" / "pki" / "ca.crt")
    url = f"https://127.0.0.1:{cfg.port}"
    reply = Client(url, ca=ca).call("LogInByAccount", {"accountName": "admin", "password": "password"})
    assert reply["inventory"]["uuid"]
    with pytest.raises(ConnectionFailure, match=r"cannot be verified.*--ca"):
        Client(url).call("GetVersion", {})  # the system's CAs do not know this CA
    other = pki.ensure_ca(tmp_path / "other")
    with pytest.raises(ConnectionFailure, match="cannot be verified"):
        Client(url, ca=str(other.cert_path)).call("GetVersion", {})
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{cfg.port}/healthz", timeout=10).read()
    assert ctl._url(cfg).startswith("https://") and ctl._healthy(cfg)


def test_api_over_tls_with_an_operator_certificate(tmp_path: Path) -> None:
    op = pki.ensure_ca(tmp_path / "operator-ca")
    issued = pki.issue(op, "api.example", ["127.0.0.1", "api.example"])
    pki.write_private(tmp_path / "api.crt", issued.cert_pem)
    pki.write_private(tmp_path / "api.key", issued.key_pem)
    for cfg in _serve(tmp_path, api_tls_cert=str(tmp_path / "api.crt"), api_tls_key=str(tmp_path / "api.key"),
                      api_tls_ca=str(op.cert_path)):
        url = f"https://127.0.0.1:{cfg.port}"
        assert Client(url, ca=str(op.cert_path)).call("GetVersion", {})["version"]
        own = tmp_path / "db" / "pki" / "ca.crt"  # the controller's own CA did not sign the operator's certificate
        with pytest.raises(ConnectionFailure, match="cannot be verified"):
            Client(url, ca=str(own)).call("GetVersion", {})


def test_api_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="api_tls_cert and api_tls_key go together"):
        ControllerConfig(db_path=str(tmp_path / "c.db"), api_tls=True, api_tls_cert="/x.crt")
