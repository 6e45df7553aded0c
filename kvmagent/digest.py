"""The digest of the agent sources installed here: the same sha256 as ``controller.compute.deploy``'s
``agent_digest()`` / ``REMOTE_DIGEST`` (kvmagent, storage, flatnet, zsutil: relative path + bytes of every ``*.py``),
reported at connect so the controller can show which build a host runs."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

AGENT_PACKAGES = ("kvmagent", "storage", "flatnet", "zsutil")


@lru_cache(maxsize=1)
def installed_digest() -> str:
    h = hashlib.sha256()
    for pkg in AGENT_PACKAGES:
        spec = importlib.util.find_spec(pkg)
        assert spec is not None and spec.origin is not None, pkg
        d = Path(spec.origin).parent
        for f in sorted(d.rglob("*.py")):
            h.update(str(f.relative_to(d.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()
