"""``zstack-ctl tls [--json] [--renew] [--print-ca]``: the controller's TLS state (issue 18, security 10).

Shows where the CA lives and its SHA-256 fingerprint and end date, the controller certificate's names and end
date, and which traffic is TLS (``agent_tls``, ``agent_tls_port``, ``api_tls`` and whose certificate).
``--renew`` issues the controller's certificate again now (restart the controller to serve it); ``--print-ca``
prints the CA certificate (PEM) to give to ``zstack-cli --ca``. Never prints or reads out a key.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from controller import pki
from controller.config import ControllerConfig
from controller.tls import controller_names, ensure_controller_cert, tls_dir


def _fingerprint(cert: x509.Certificate) -> str:
    return "SHA256:" + cert.fingerprint(hashes.SHA256()).hex(":")


def tls_info(cfg: ControllerConfig, *, renew: bool = False) -> dict[str, Any]:
    d = tls_dir(cfg)
    if renew:
        ca = pki.ensure_ca(d)
        issued = pki.issue(ca, pki.CONTROLLER_NAME, controller_names(cfg))
        pki.write_private(d / "controller.key", issued.key_pem)
        pki.write_private(d / "controller.crt", issued.cert_pem)
    ca, cert_path, _ = ensure_controller_cert(cfg)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return {"tlsDir": str(d), "caCertificate": str(ca.cert_path), "caFingerprint": _fingerprint(ca.cert),
            "caNotAfter": ca.cert.not_valid_after_utc.isoformat(), "controllerCertificate": str(cert_path),
            "controllerNames": pki.names_of(cert), "controllerNotAfter": cert.not_valid_after_utc.isoformat(),
            "agentTls": cfg.agent_tls, "agentTlsPort": cfg.agent_tls_port, "apiTls": cfg.api_tls,
            "apiCertificate": (cfg.api_tls_cert or str(cert_path)) if cfg.api_tls else None}


def tls_cmd(cfg: ControllerConfig, *, as_json: bool, renew: bool, print_ca: bool) -> int:
    try:
        info = tls_info(cfg, renew=renew)
    except (pki.PkiError, OSError) as e:
        print(f"tls: {e}")
        return 1
    if print_ca:
        print(tls_dir(cfg).joinpath("ca.crt").read_text(), end="")
        return 0
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    if renew:
        print(f"issued a new controller certificate {info['controllerCertificate']}; restart the controller "
              "(zstack-ctl stop && zstack-ctl start) to serve it")
    for k, v in info.items():
        print(f"  {k}: {', '.join(v) if isinstance(v, list) else v}")
    return 0
