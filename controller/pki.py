"""The controller's certificate authority (issue 18, security 10): TLS for agent traffic.

* :func:`ensure_ca` makes the CA at first start in ``tls_dir`` (default ``pki/`` beside the database):
  ``ca.key`` (EC P-256, 0600) and ``ca.crt`` (10 years). An existing CA is loaded, never replaced; a key file
  readable by others is made 0600. Key bytes are never logged and never go into an inventory or the database.
* :func:`issue` signs a leaf certificate: SAN = the given IP addresses / DNS names, serverAuth + clientAuth,
  :data:`LEAF_DAYS` days. The key is made for the leaf and returned with it (the controller ships both to the
  host over SSH; nothing keeps a copy).
* The controller's own certificate (the agents' events channel, and the API when ``api_tls`` is on) carries
  the DNS name :data:`CONTROLLER_NAME`: agents verify the controller against THAT name, which no agent
  certificate ever carries (agents get IP SANs only), so one host's certificate cannot impersonate the
  controller.
* :func:`client_context` trusts only the given CA (not the system's): pinning (``kvmagent.contract.tls``, shared with
  the agent).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvmagent.contract.tls import CONTROLLER_NAME, client_context, server_context

CA_DAYS = 3650
LEAF_DAYS = 825
#: a leaf with less than this left is issued again at the next deploy (AddKvmHost, ReconnectHost)
RENEW_BEFORE = dt.timedelta(days=30)


class PkiError(Exception):
    """The CA files are unusable (the message names the file and what to do)."""


@dataclass(frozen=True)
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def ensure_ca(directory: Path) -> Ca:
    """The CA in ``directory`` (``ca.crt``, ``ca.key``), made when absent. Directory 0700, key 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if not key_path.exists() and not cert_path.exists():
        cert, key = _make_ca(f"ZStack-Py CA {os.urandom(4).hex()}")
        write_private(key_path, _key_pem(key))
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    if not key_path.exists() or not cert_path.exists():
        missing = key_path if not key_path.exists() else cert_path
        raise PkiError(f"the controller's CA is incomplete: {missing} is missing; restore it from a backup, or "
                       f"move {directory} away to make a new CA (every host then needs ReconnectHost)")
    if key_path.stat().st_mode & 0o077:
        os.chmod(key_path, 0o600)
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as e:
        raise PkiError(f"the controller's CA in {directory} cannot be read ({type(e).__name__}); restore "
                       "ca.key and ca.crt from a backup") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.public_key() != cert.public_key():
        raise PkiError(f"{key_path} is not the key of {cert_path}; restore both from the same backup")
    return Ca(cert, loaded, cert_path)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def issue(ca: Ca, common_name: str, names: list[str], *, days: int = LEAF_DAYS,
          now: dt.datetime | None = None) -> Issued:
    """A leaf certificate for ``names`` (IP addresses and/or DNS names), signed by ``ca``, with a new key."""
    if not names:
        raise ValueError("a certificate needs at least one subject alternative name")
    key = ec.generate_private_key(ec.SECP256R1())
    start = now or _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - dt.timedelta(minutes=5)).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def names_of(cert: x509.Certificate) -> list[str]:
    """The SAN entries of ``cert`` as strings."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName)


def still_good(ca: Ca, cert_pem: bytes, names: list[str], *, now: dt.datetime | None = None) -> bool:
    """Whether a certificate found on a host can be kept: signed by ``ca``, covering ``names``, and valid
    for more than :data:`RENEW_BEFORE`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    t = now or _now()
    have = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names_of(cert)}
    want = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
    return want <= have and cert.not_valid_before_utc <= t and cert.not_valid_after_utc - t > RENEW_BEFORE


def _is_ip(n: str) -> bool:
    try:
        ipaddress.ip_address(n)
    except ValueError:
        return False
    return True


__all__ = ["CONTROLLER_NAME", "Ca", "Issued", "PkiError", "client_context", "ensure_ca", "issue", "names_of",
           "server_context", "still_good", "write_private"]
