"""Account password hashes: scrypt (salted, memory-hard) over the SHA-512 hex digest of the password.

1.0 clients (and zstack-cli) send ``sha512hex(password)``; a clear password is digested first, so both give
the same scrypt input. Stored form: ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``. A stored value is never
itself a password: it is not a SHA-512 digest, and anything sent is hashed again before the comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

N, R, P = 2 ** 14, 8, 1
_DKLEN = 32
_SHA512_HEX = re.compile(r"[0-9a-fA-F]{128}")
_STORED = re.compile(r"scrypt\$(\d+)\$(\d+)\$(\d+)\$([0-9a-f]{32})\$([0-9a-f]{64})")


def client_digest(password: str) -> str:
    """What a 1.0 client sends: the lower-case SHA-512 hex digest (a digest is kept as it is)."""
    if _SHA512_HEX.fullmatch(password):
        return password.lower()
    return hashlib.sha512(password.encode()).hexdigest()


def is_legacy(stored: str) -> bool:
    """A 1.0-style stored value: the bare SHA-512 hex digest (migrated at start-up, never accepted)."""
    return bool(_SHA512_HEX.fullmatch(stored))


def hash_digest(digest: str, *, salt: bytes | None = None) -> str:
    """The stored form for a client digest (slow: run it off the event loop)."""
    salt = salt if salt is not None else os.urandom(16)
    h = hashlib.scrypt(digest.encode(), salt=salt, n=N, r=R, p=P, dklen=_DKLEN, maxmem=64 << 20)
    return f"scrypt${N}${R}${P}${salt.hex()}${h.hex()}"


def hash_password(password: str) -> str:
    return hash_digest(client_digest(password))


def verify(stored: str, password: str) -> bool:
    """Whether ``password`` (clear text or its SHA-512 hex digest) matches the stored scrypt hash."""
    m = _STORED.fullmatch(stored)
    if m is None:
        return False
    n, r, p = (int(g) for g in m.groups()[:3])
    got = hashlib.scrypt(client_digest(password).encode(), salt=bytes.fromhex(m.group(4)), n=n, r=r, p=p,
                         dklen=_DKLEN, maxmem=64 << 20)
    return hmac.compare_digest(got.hex(), m.group(5))
