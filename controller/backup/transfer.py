"""Streaming an image url (``http(s)://`` or a ``file://`` on the controller) into open SFTP files.

One pass over the source feeds every destination at once; md5 and size are computed on the fly and the
file is never held in memory (chunks of :data:`CHUNK` bytes). ``progress(done, total)`` is called after
each chunk (``total`` None when the server gives no length); throttling is the caller's business.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import aiohttp
import asyncssh
from yarl import URL

from controller.backup import urlcheck
from controller.errors import InvalidArgument, OperationError

CHUNK = 1 << 20
SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class Copied:
    size: int
    md5: str


class DownloadFailed(OperationError):
    """The source could not be read or a destination could not be written (409, SYS.1006)."""


def check_url(url: str, *, local_file: bool = True) -> None:
    """Reject urls this storage cannot download (SYS.1007 naming the field, value and what is allowed).

    ``local_file``: a ``file://`` url must name an existing file on the controller (it is downloaded from
    here); legacy images that hosts read directly pass False."""
    p = urlparse(url)
    if p.scheme not in SCHEMES:
        raise InvalidArgument(f"invalid field[url]: {url!r} has scheme {p.scheme!r}; allowed: http://, https://, "
                              "file:///<absolute path on the controller>")
    if p.scheme == "file":
        path = unquote(p.path)
        if p.netloc or not path.startswith("/"):
            raise InvalidArgument(f"invalid field[url]: {url!r} must be file:///<absolute path>")
        if local_file and not os.path.isfile(path):
            raise InvalidArgument(f"invalid field[url]: {url!r}: no such file on the controller")
    elif not p.hostname:
        raise InvalidArgument(f"invalid field[url]: {url!r} names no host")


Chunks = AsyncIterator[bytes]


@asynccontextmanager
async def open_source(url: str, allowed_nets: Sequence[str] = ()) -> AsyncIterator[tuple[Chunks, int | None]]:
    """(chunk iterator, total size or None) of the url; http(s) hops checked by ``urlcheck``."""
    p = urlparse(url)
    if p.scheme == "file":
        path = unquote(p.path)
        with open(path, "rb") as f:  # noqa: ASYNC230  (reads go through a worker thread)
            async def chunks() -> Chunks:
                while data := await asyncio.to_thread(f.read, CHUNK):
                    yield data
            yield chunks(), os.fstat(f.fileno()).st_size
        return
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)
    try:
        connector = aiohttp.TCPConnector(resolver=urlcheck.GuardedResolver(allowed_nets))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as session:
            async with _follow(session, url, allowed_nets) as resp:
                yield resp.content.iter_chunked(CHUNK), resp.content_length
    except aiohttp.ClientError as e:
        raise DownloadFailed(f"cannot download {url}: {e}") from e


@asynccontextmanager
async def _follow(session: aiohttp.ClientSession, url: str,
                  allowed_nets: Sequence[str]) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET ``url`` following at most :data:`urlcheck.MAX_REDIRECTS` redirects by hand, every hop checked
    (scheme http/https, no forbidden address) before it is contacted."""
    current = url
    for _ in range(urlcheck.MAX_REDIRECTS + 1):
        await urlcheck.check_http_target(current, allowed_nets)
        async with session.get(current, allow_redirects=False) as resp:
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                nxt = str(resp.url.join(URL(resp.headers["Location"])))
                if urlparse(nxt).scheme not in ("http", "https"):
                    raise InvalidArgument(f"invalid field[url]: {url!r} redirects to {nxt!r}; only http:// and "
                                          "https:// redirects are followed")
                current = nxt
                continue
            if resp.status != 200:
                raise DownloadFailed(f"cannot download {url}: HTTP {resp.status} {resp.reason}")
            yield resp
            return
    raise DownloadFailed(f"cannot download {url}: more than {urlcheck.MAX_REDIRECTS} redirects")


async def copy(url: str, dests: Sequence[asyncssh.SFTPClientFile],
               progress: Callable[[int, int | None], Awaitable[None]], *,
               allowed_nets: Sequence[str] = ()) -> Copied:
    """Stream ``url`` into every file of ``dests``; returns the byte count and md5 of what was written."""
    md5 = hashlib.md5(usedforsecurity=False)
    done = 0
    async with open_source(url, allowed_nets) as (chunks, total):
        try:
            async for data in chunks:
                md5.update(data)
                await asyncio.gather(*(f.write(data) for f in dests))
                done += len(data)
                await progress(done, total)
        except aiohttp.ClientError as e:
            raise DownloadFailed(f"download of {url} broke off after {done} bytes: {e}") from e
        except (asyncssh.SFTPError, OSError) as e:
            raise DownloadFailed(f"writing {url} to the backup storage failed after {done} bytes: {e}") from e
    if total is not None and done != total:
        raise DownloadFailed(f"download of {url} ended after {done} of {total} bytes")
    return Copied(done, md5.hexdigest())
