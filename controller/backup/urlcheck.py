"""Which urls AddImage may read (issue 18, security 5).

* ``file://`` only inside the controller's configured import directories (``image_import_dirs``; the real
  path after symlinks must lie inside one), so the controller's own files (its database, keys) can never
  become an image readable from a VM.
* ``http(s)://`` only to hosts whose EVERY address is a normal unicast address: loopback, link-local (the
  cloud metadata address 169.254.169.254 among them), unspecified, multicast and reserved addresses are
  refused, for the url itself, for every redirect (followed by hand, each hop checked) and at connect time
  (:class:`GuardedResolver`, so a name that resolves differently the second time is still caught).

Errors are :class:`~controller.errors.InvalidArgument` (400, SYS.1007) naming the field, the value and
what is allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from controller.errors import InvalidArgument

MAX_REDIRECTS = 5


def forbidden_reason(addr: str, allowed: Sequence[str] = ()) -> str | None:
    """Why ``addr`` may not be downloaded from, or None when it is a normal unicast address or inside one of
    the ``allowed`` networks (the controller setting ``image_url_allowed_networks``, for lab mirrors)."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in ipaddress.ip_network(n, strict=False) for n in allowed):
        return None
    for name in ("loopback", "link_local", "unspecified", "multicast", "reserved"):
        if getattr(ip, f"is_{name}"):
            return f"a {name.replace('_', '-')} address"
    if str(ip) == "169.254.169.254":
        return "the metadata address"
    return None


def check_import_path(url: str, dirs: Sequence[str]) -> str:
    """The local path of a ``file://`` url if it lies inside an import directory and is a file."""
    path = unquote(urlparse(url).path)
    allowed = [os.path.realpath(d) for d in dirs]
    real = os.path.realpath(path)
    if not any(real.startswith(d.rstrip("/") + "/") for d in allowed):
        shown = ", ".join(dirs) if dirs else "none configured (image_import_dirs in the controller config)"
        raise InvalidArgument(f"invalid field[url]: {url!r} is not inside an image import directory; allowed "
                              f"file:// directories: {shown}")
    if not os.path.isfile(real):
        raise InvalidArgument(f"invalid field[url]: {url!r}: no such file on the controller")
    return real


async def check_http_target(url: str, allowed: Sequence[str] = (), *, field: str = "url") -> None:
    """Refuse an http(s) url whose host is, or resolves to, a forbidden address."""
    host = urlparse(url).hostname or ""
    try:
        addrs = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as e:
            raise InvalidArgument(f"invalid field[{field}]: {url!r}: the host {host!r} does not resolve ({e})") from e
        addrs = sorted({str(i[4][0]) for i in infos})
    for a in addrs:
        why = forbidden_reason(a, allowed)
        if why:
            raise InvalidArgument(f"invalid field[{field}]: {url!r}: the host {host!r} is {a}, {why}; images are "
                                  "not downloaded from loopback, link-local, metadata, unspecified, multicast or "
                                  "reserved addresses")


class GuardedResolver(AbstractResolver):
    """The default resolver, refusing every forbidden address at connect time (DNS rebinding)."""

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        self._inner = DefaultResolver()
        self._allowed = tuple(allowed)

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        got = await self._inner.resolve(host, port, family)
        for r in got:
            why = forbidden_reason(r["host"], self._allowed)
            if why:
                raise OSError(f"{host} resolves to {r['host']}, {why}; refused")
        return got

    async def close(self) -> None:
        await self._inner.close()
