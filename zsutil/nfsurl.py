"""An NFS primary storage url, ``host:/absolute/path`` (1.0's format), checked the same way by the controller (at
AddNfsPrimaryStorage) and by the agent (before it builds the mount argv)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


def segment(extra: str = "", *, dot: bool = True) -> str:
    """A path segment other than ``..`` (nor ``.`` unless ``dot``; no ASCII control character, space, '/' or
    ``extra`` characters), as a regex read alike by Python and ECMA (the API schema)."""
    no = r"\x00-\x20\x7f/" + extra
    return rf"(?:[^{no}.][^{no}]*|\.[^{no}.][^{no}]*|\.\.[^{no}]+" + (r"|\.)" if dot else ")")


#: hostname or IPv4 address (no leading '-': it would read as an option of mount), ':', absolute export path
#: without '..' segments. The API schema carries the same pattern (ECMA and Python regex alike).
PATTERN = rf"^(?P<server>[A-Za-z0-9][A-Za-z0-9.-]{{0,252}}):(?P<export>(?:/{segment(':')})+/?|/)$"
_NFS_URL = re.compile(PATTERN)
ALLOWED = "host:/absolute/path (a hostname or IPv4 address, one ':', then the export's absolute path, no '..')"


@dataclass(frozen=True)
class NfsUrl:
    server: str
    export: str

    def __str__(self) -> str:
        return f"{self.server}:{self.export}"


def parse(url: str) -> NfsUrl:
    """``host:/path`` → :class:`NfsUrl` (export path normalised); ValueError naming what is allowed otherwise."""
    m = _NFS_URL.fullmatch(url) if isinstance(url, str) else None
    if m is None:
        raise ValueError(f"{url!r} is not an NFS url; allowed: {ALLOWED}")
    return NfsUrl(m.group("server"), os.path.normpath(m.group("export")))
