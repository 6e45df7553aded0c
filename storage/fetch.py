"""Download sources for the image cache: ``file://`` paths, ``http(s)://`` URLs and SFTP backup storage.

:func:`fetch` writes the whole source into ``dest`` (the caller's temporary name), computing md5 on the
fly, and returns the size and md5. It never leaves ``dest`` half-written on failure (it is removed).
SFTP: an explicit :class:`SftpSource` (:func:`sftp_source`: the url without the password, the password and the
storage's recorded SSH host key passed apart, the key pinned) or, for tools and tests,
``sftp://user:password@host[:port]/path`` (no key check); the password is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncssh

from storage import files
from storage.errors import InvalidArgument, TransferFailed

CHUNK = 1 << 20


@dataclass(frozen=True)
class FileSource:
    path: str


@dataclass(frozen=True)
class HttpSource:
    url: str


@dataclass(frozen=True)
class SftpSource:
    hostname: str
    username: str
    password: str
    path: str
    port: int = 22
    #: the storage's SSH host key (OpenSSH public key line) recorded by the controller: pinned when given
    host_key: str | None = None

    def __repr__(self) -> str:  # never print the password
        return f"SftpSource({self.username}@{self.hostname}:{self.port}{self.path})"


Source = FileSource | HttpSource | SftpSource


@dataclass(frozen=True)
class Fetched:
    size: int
    md5: str


def parse_source(url: str) -> Source:
    """Parse a download URL; raises :class:`InvalidArgument` naming the URL (password masked)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if not parts.path.startswith("/") or parts.netloc not in ("", "localhost"):
            raise InvalidArgument(
                f"url {url!r}: file URLs must be file:///absolute/path",
                details={"field": "url", "value": url},
            )
        return FileSource(unquote(parts.path))
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise InvalidArgument(f"url {url!r} has no host", details={"field": "url", "value": url})
        return HttpSource(url)
    if parts.scheme == "sftp":
        shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        if not (parts.hostname and parts.username and parts.password and parts.path.startswith("/")):
            raise InvalidArgument(
                f"url {shown!r}: expected sftp://user:password@host[:port]/absolute/path",
                details={"field": "url", "value": shown},
            )
        return SftpSource(
            hostname=parts.hostname,
            username=unquote(parts.username),
            password=unquote(parts.password),
            path=unquote(parts.path),
            port=parts.port or 22,
        )
    raise InvalidArgument(
        f"url {url.split('@')[-1]!r}: scheme {parts.scheme!r} not supported; "
        "allowed: file, http, https, sftp",
        details={"field": "url", "value": parts.scheme},
    )


def sftp_source(url: str, password: str, host_key: str | None) -> SftpSource:
    """``sftp://user@host[:port]/path`` with the password (and host key) given apart from the url."""
    parts = urlsplit(url)
    if parts.scheme != "sftp" or parts.password or not (parts.hostname and parts.username) \
            or not parts.path.startswith("/"):
        raise InvalidArgument(
            f"url {url.split('@')[-1]!r}: expected sftp://user@host[:port]/absolute/path (the password goes in "
            "sftpPassword, never in the url)",
            details={"field": "url"},
        )
    if host_key:
        try:
            asyncssh.import_public_key(host_key)
        except (ValueError, asyncssh.KeyImportError) as e:
            raise InvalidArgument(f"sftpHostKey is not an OpenSSH public key: {e}",
                                  details={"field": "sftpHostKey"}) from e
    return SftpSource(hostname=parts.hostname, username=unquote(parts.username), password=password,
                      path=unquote(parts.path), port=parts.port or 22, host_key=host_key or None)


def _copy_hashing(src: str, dest: Path) -> Fetched:
    h = hashlib.md5()
    size = 0
    with open(src, "rb", buffering=0) as fi, open(dest, "wb") as fo:
        while chunk := fi.read(4 << 20):
            h.update(chunk)
            fo.write(chunk)
            size += len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return Fetched(size, h.hexdigest())


class _HashingWriter:
    def __init__(self, dest: Path) -> None:
        self.f = open(dest, "wb")
        self.h = hashlib.md5()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.h.update(chunk)
        self.f.write(chunk)
        self.size += len(chunk)

    def close(self) -> Fetched:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        return Fetched(self.size, self.h.hexdigest())


async def _fetch_http(src: HttpSource, dest: Path, session: aiohttp.ClientSession) -> Fetched:
    w = _HashingWriter(dest)
    try:
        async with session.get(src.url, timeout=aiohttp.ClientTimeout(total=None, sock_read=300)) as resp:
            if resp.status != 200:
                raise TransferFailed(
                    f"download of {src.url} failed: HTTP {resp.status}",
                    details={"url": src.url, "status": resp.status},
                )
            async for chunk in resp.content.iter_chunked(CHUNK):
                await asyncio.to_thread(w.write, chunk)
    except aiohttp.ClientError as e:
        raise TransferFailed(f"download of {src.url} failed: {e}", details={"url": src.url}) from e
    finally:
        res = await asyncio.to_thread(w.close)
    return res


def host_key_pin(src: SftpSource) -> dict[str, object]:
    """asyncssh.connect options that make the server prove it holds ``src.host_key`` (the key the controller
    recorded) before the password is sent; no pin when none is known."""
    if not src.host_key:
        return {"known_hosts": None}
    key = asyncssh.import_public_key(src.host_key)
    return {"known_hosts": ([key], [], []), "server_host_key_algs": [a.decode() for a in key.sig_algorithms]}


async def _fetch_sftp(src: SftpSource, dest: Path) -> Fetched:
    pin = host_key_pin(src)
    try:
        async with (
            asyncssh.connect(
                src.hostname,
                port=src.port,
                username=src.username,
                password=src.password,
                client_keys=None,
                agent_path=None,
                connect_timeout=30,
                **pin,  # type: ignore[arg-type]
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            await sftp.get(src.path, str(dest), block_size=1 << 20, max_requests=16)
    except asyncssh.HostKeyNotVerifiable as e:
        want = asyncssh.import_public_key(str(src.host_key)).get_fingerprint("sha256")
        raise TransferFailed(
            f"sftp download of {src!r} refused: the backup storage did not present its recorded SSH host key "
            f"{want} (ReconnectBackupStorage shows the key it presents now)",
            details={"source": repr(src)},
        ) from e
    except (OSError, asyncssh.Error) as e:
        raise TransferFailed(f"sftp download of {src!r} failed: {e}", details={"source": repr(src)}) from e
    md5 = await asyncio.to_thread(files.file_digest, dest, "md5")
    return Fetched(dest.stat().st_size, md5)  # noqa: ASYNC240


async def fetch(source: Source, dest: Path, *, session: aiohttp.ClientSession) -> Fetched:
    """Copy ``source`` into ``dest`` and return its size and md5; on failure ``dest`` is removed."""
    try:
        if isinstance(source, FileSource):
            if not os.path.isfile(source.path):  # noqa: ASYNC240
                raise InvalidArgument(
                    f"url file://{source.path}: no such file on this host",
                    details={"field": "url", "value": source.path},
                )
            return await asyncio.to_thread(_copy_hashing, source.path, dest)
        if isinstance(source, HttpSource):
            return await _fetch_http(source, dest, session)
        return await _fetch_sftp(source, dest)
    except BaseException:
        files.remove_file(dest)
        raise
