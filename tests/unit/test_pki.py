"""The controller's CA and certificates (issue 18, security 10): made once, 0600 keys, SANs, expiry, renewal."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from controller import pki
from controller.config import ControllerConfig
from controller.core import Controller
from controller.tls import Tls
from kvmagent.config import AgentConfig


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_ca_is_made_once_with_private_files(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    ca = pki.ensure_ca(d)
    assert _mode(d) == 0o700 and _mode(d / "ca.key") == 0o600 and _mode(d / "ca.crt") == 0o600
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again = pki.ensure_ca(d)
    assert again.cert == ca.cert  # loaded, never replaced


def test_a_loose_key_file_is_made_private(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    pki.ensure_ca(d)
    (d / "ca.key").chmod(0o644)
    pki.ensure_ca(d)
    assert _mode(d / "ca.key") == 0o600


def test_incomplete_or_mismatched_ca_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    pki.ensure_ca(a)
    pki.ensure_ca(b)
    (a / "ca.key").write_bytes((b / "ca.key").read_bytes())
    with pytest.raises(pki.PkiError, match="is not the key of"):
        pki.ensure_ca(a)
    (b / "ca.crt").unlink()
    with pytest.raises(pki.PkiError, match=r"ca\.crt is missing"):
        pki.ensure_ca(b)


def test_leaf_has_the_sans_usages_and_lifetime(tmp_path: Path) -> None:
    ca = pki.ensure_ca(tmp_path)
    issued = pki.issue(ca, "agent h1", ["10.0.0.11", "fd00::11", "h1.example"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    cert.verify_directly_issued_by(ca.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.11"),
                                                        ipaddress.ip_address("fd00::11")]
    assert san.get_values_for_type(x509.DNSName) == ["h1.example"]
    assert pki.CONTROLLER_NAME not in pki.names_of(cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert pki.LEAF_DAYS <= days <= pki.LEAF_DAYS + 1
    assert b"PRIVATE KEY" in issued.key_pem
    with pytest.raises(ValueError):
        pki.issue(ca, "nothing", [])


def test_still_good_checks_issuer_names_and_expiry(tmp_path: Path) -> None:
    ca = pki.ensure_ca(tmp_path / "ca")
    other = pki.ensure_ca(tmp_path / "other")
    now = dt.datetime.now(dt.UTC)
    good = pki.issue(ca, "a", ["10.0.0.11"]).cert_pem
    assert pki.still_good(ca, good, ["10.0.0.11"])
    assert not pki.still_good(ca, good, ["10.0.0.12"])  # the host's address changed
    assert not pki.still_good(other, good, ["10.0.0.11"])  # another CA (a new controller CA)
    assert not pki.still_good(ca, b"not a certificate", ["10.0.0.11"])
    short = pki.issue(ca, "a", ["10.0.0.11"], days=20).cert_pem  # inside RENEW_BEFORE: renewed at deploy
    assert not pki.still_good(ca, short, ["10.0.0.11"])
    assert not pki.still_good(ca, good, ["10.0.0.11"], now=now + dt.timedelta(days=pki.LEAF_DAYS))


def test_contexts_pin_the_ca_and_refuse_old_protocols(tmp_path: Path) -> None:
    ca = pki.ensure_ca(tmp_path)
    client = pki.client_context(ca_pem=ca.cert_pem)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(client.get_ca_certs()) == 1  # only this CA, not the system's


def test_controller_service_writes_private_files_and_logs_no_key(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    cfg = ControllerConfig(db_path=str(tmp_path / "db" / "c.db"), log_dir=str(tmp_path / "log"),
                           tls_names=["ctl.example", "192.0.2.7"])
    caplog.set_level(logging.DEBUG)
    tls = Tls(Controller(cfg))
    d = tmp_path / "db" / "pki"
    assert tls.dir == d
    for f in ("ca.key", "ca.crt", "controller.key", "controller.crt"):
        assert _mode(d / f) == 0o600, f
    cert = x509.load_pem_x509_certificate((d / "controller.crt").read_bytes())
    names = pki.names_of(cert)
    assert {pki.CONTROLLER_NAME, "localhost", "127.0.0.1", "ctl.example", "192.0.2.7"} <= set(names)
    logged = caplog.text
    for f in ("ca.key", "controller.key"):
        body = (d / f).read_text().splitlines()[1]
        assert body not in logged
    first = (d / "controller.crt").read_bytes()
    Tls(Controller(cfg))  # a second start keeps a certificate that is still good
    assert (d / "controller.crt").read_bytes() == first


def test_agent_config_needs_cert_and_key_together(tmp_path: Path) -> None:
    base = {"host_uuid": "h", "token": "t" * 16, "listen_ip": "127.0.0.1"}
    AgentConfig.model_validate({**base, "tls_cert": "/a.crt", "tls_key": "/a.key", "tls_ca": "/ca.crt"})
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        AgentConfig.model_validate({**base, "tls_cert": "/a.crt"})


def test_zstack_ctl_tls_shows_renews_and_prints_the_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller import ctl

    cfgfile = tmp_path / "controller.json"
    cfgfile.write_text('{"db_path": "%s", "api_tls": true}' % (tmp_path / "c.db"))
    assert ctl.main(["--config", str(cfgfile), "tls", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["caCertificate"] == str(tmp_path / "pki" / "ca.crt") and info["agentTls"] is True
    assert info["apiCertificate"] == str(tmp_path / "pki" / "controller.crt")
    assert pki.CONTROLLER_NAME in info["controllerNames"] and info["caFingerprint"].startswith("SHA256:")
    before = (tmp_path / "pki" / "controller.crt").read_bytes()
    assert ctl.main(["--config", str(cfgfile), "tls", "--renew"]) == 0
    assert "restart the controller" in capsys.readouterr().out
    assert (tmp_path / "pki" / "controller.crt").read_bytes() != before
    assert _mode(tmp_path / "pki" / "controller.key") == 0o600
    assert ctl.main(["--config", str(cfgfile), "tls", "--print-ca"]) == 0
    out = capsys.readouterr().out
    assert out == (tmp_path / "pki" / "ca.crt").read_text() and "PRIVATE" not in out
