"""Local-storage endpoints of the agent: thin adapters from the wire contract to ``StorageService``.

A :class:`storage.errors.StorageError` is a coded error the server answers with its code, status and
details; every handler attaches the storage's capacity to its reply. :func:`raw_routes` returns the one non-JSON
endpoint, ``POST /localstorage/receive`` (destination side of a host-to-host copy).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from kvmagent.contract import storage as c
from kvmagent.contract.base import AgentError
from kvmagent.driver.base import HypervisorDriver, VmState
from kvmagent.routing import error_response, handles
from storage import fetch
from storage.errors import InvalidArgument, StorageError
from storage.layout import VolumeType
from storage.local import Capacity
from storage.migrate import IDLE_TIMEOUT, RECEIVE_PATH
from storage.rawrecv import RawBody
from storage.service import StorageService


class HasStorage(Protocol):
    storage: StorageService


class HasStorageAndDriver(HasStorage, Protocol):
    driver: HypervisorDriver


#: Domain states in which a snapshot must be taken live (QEMU has the volume open).
LIVE_STATES = frozenset({VmState.RUNNING, VmState.PAUSED})


#: Where the raw receive handler finds the service when :func:`raw_routes` is called without a context.
STORAGE_KEY = web.AppKey("zstack.storage", StorageService)
#: Seconds an early error reply of the receive endpoint waits for the sender to stop sending.
LINGER = 10


def check_storage_root(storage_path: str, roots: list[str]) -> None:
    """``storage_path`` (real path) lies strictly inside one of the agent's configured ``storage_roots``."""
    real = os.path.realpath(storage_path)
    if not storage_path.startswith("/") or not any(
            real.startswith(os.path.realpath(r).rstrip("/") + "/") for r in roots):
        raise AgentError("AGENT.INVALID_REQUEST", f"invalid field[storagePath]: {storage_path!r} is not inside one "
                         f"of this host's storage_roots {roots} (agent config kvmagent.yaml); add the directory "
                         "there to use it for local primary storage", status=400,
                         details={"field": "storagePath", "value": storage_path})


def cap(capacity: Capacity) -> dict[str, int]:
    return {
        "totalCapacity": capacity.total,
        "availableCapacity": capacity.available,
        "totalPhysicalCapacity": capacity.total_physical,
        "availablePhysicalCapacity": capacity.available_physical,
        "usedByStorage": capacity.used_by_storage,
    }


async def _cap(ctx: HasStorage, cmd: c.LocalStorageCmd) -> dict[str, Any]:
    return cap(await ctx.storage.capacity(cmd.storagePath))


@handles(c.InitCmd)
async def init(ctx: HasStorage, cmd: c.InitCmd) -> c.InitReply:
    roots = getattr(getattr(ctx, "config", None), "storage_roots", None)
    if roots is not None:
        check_storage_root(cmd.storagePath, roots)
    return c.InitReply(**cap(await ctx.storage.init(cmd.storagePath, cmd.primaryStorageUuid, cmd.hostUuid)))


@handles(c.CapacityCmd)
async def capacity(ctx: HasStorage, cmd: c.CapacityCmd) -> c.LocalStorageReply:
    return c.LocalStorageReply(**cap(await ctx.storage.capacity(cmd.storagePath, measure_used=True)))


@handles(c.DownloadImageCmd)
async def download_image(ctx: HasStorage, cmd: c.DownloadImageCmd) -> c.DownloadImageReply:
    source = fetch.sftp_source(cmd.url, cmd.sftpPassword, cmd.sftpHostKey) if cmd.sftpPassword else cmd.url
    rec = await ctx.storage.download_image(
        cmd.storagePath, cmd.imageUuid, cmd.format, source, md5=cmd.md5, size=cmd.size
    )
    return c.DownloadImageReply(
        installPath=rec.path,
        format="iso" if rec.format == "iso" else "qcow2",
        md5=rec.md5,
        size=rec.size,
        virtualSize=rec.virtual_size,
        actualSize=rec.actual_size,
        **await _cap(ctx, cmd),
    )


async def _volume_reply(ctx: HasStorage, cmd: c.LocalStorageCmd, path: Path) -> c.VolumeReply:
    virtual, allocated = await ctx.storage.volume_sizes(cmd.storagePath, str(path))
    return c.VolumeReply(installPath=str(path), size=virtual, actualSize=allocated, **await _cap(ctx, cmd))


@handles(c.CreateVolumeFromCacheCmd)
async def create_from_cache(ctx: HasStorage, cmd: c.CreateVolumeFromCacheCmd) -> c.VolumeReply:
    path = await ctx.storage.create_volume_from_cache(
        cmd.storagePath, VolumeType(cmd.volumeType), cmd.accountUuid, cmd.volumeUuid, cmd.imageUuid, cmd.size
    )
    return await _volume_reply(ctx, cmd, path)


@handles(c.CreateEmptyVolumeCmd)
async def create_empty(ctx: HasStorage, cmd: c.CreateEmptyVolumeCmd) -> c.VolumeReply:
    path = await ctx.storage.create_empty_volume(
        cmd.storagePath, VolumeType(cmd.volumeType), cmd.accountUuid, cmd.volumeUuid, cmd.size
    )
    return await _volume_reply(ctx, cmd, path)


@handles(c.CreateVolumeFromSnapshotCmd)
async def create_from_snapshot(ctx: HasStorage, cmd: c.CreateVolumeFromSnapshotCmd) -> c.VolumeReply:
    path = await ctx.storage.create_volume_from_file(cmd.storagePath, VolumeType(cmd.volumeType), cmd.accountUuid,
                                                     cmd.volumeUuid, cmd.snapshotPath)
    return await _volume_reply(ctx, cmd, path)


@handles(c.DeleteVolumeCmd)
async def delete_volume(ctx: HasStorage, cmd: c.DeleteVolumeCmd) -> c.DeleteVolumeReply:
    deleted = await ctx.storage.delete_volume(cmd.storagePath, cmd.installPath)
    return c.DeleteVolumeReply(deleted=deleted, **await _cap(ctx, cmd))


@handles(c.VolumeInfoCmd)
async def volume_info(ctx: HasStorage, cmd: c.VolumeInfoCmd) -> c.VolumeInfoReply:
    info = await ctx.storage.volume_info(cmd.storagePath, cmd.installPath)
    return c.VolumeInfoReply(
        installPath=str(info.path),
        format=info.format,
        size=info.virtual_size,
        actualSize=info.actual_size,
        backingFile=info.backing_file,
        chain=info.chain,
        **await _cap(ctx, cmd),
    )


@handles(c.CreateSnapshotCmd)
async def create_snapshot(ctx: HasStorageAndDriver, cmd: c.CreateSnapshotCmd) -> c.SnapshotReply:
    """Live when ``vmUuid`` runs here (``storage.snapshots.create_live`` + ``driver.switch_disk_top``),
    else offline. Both keep ``volumePath``; both are idempotent."""
    live = cmd.vmUuid is not None and await ctx.driver.vm_state(cmd.vmUuid) in LIVE_STATES
    if live:
        assert cmd.vmUuid is not None and cmd.volumeUuid is not None  # checked by the contract
        switch = functools.partial(_switch, ctx.driver, cmd.vmUuid, cmd.volumeUuid)
        snap = await ctx.storage.create_live_snapshot(cmd.storagePath, cmd.volumePath, cmd.snapshotUuid, switch)
    else:
        snap = await ctx.storage.create_snapshot(cmd.storagePath, cmd.volumePath, cmd.snapshotUuid)
    return c.SnapshotReply(snapshotPath=str(snap), volumePath=cmd.volumePath, live=live, **await _cap(ctx, cmd))


async def _switch(driver: HypervisorDriver, vm_uuid: str, volume_uuid: str, new_top: Path) -> None:
    await driver.switch_disk_top(vm_uuid, volume_uuid, str(new_top))


@handles(c.RevertSnapshotCmd)
async def revert_snapshot(ctx: HasStorage, cmd: c.RevertSnapshotCmd) -> c.SnapshotReply:
    await ctx.storage.revert_snapshot(cmd.storagePath, cmd.volumePath, cmd.snapshotPath)
    return c.SnapshotReply(snapshotPath=cmd.snapshotPath, volumePath=cmd.volumePath, **await _cap(ctx, cmd))


@handles(c.DeleteSnapshotCmd)
async def delete_snapshot(ctx: HasStorage, cmd: c.DeleteSnapshotCmd) -> c.DeleteSnapshotReply:
    deleted = await ctx.storage.delete_snapshot(cmd.storagePath, cmd.volumePath, cmd.snapshotPath)
    return c.DeleteSnapshotReply(deleted=deleted, **await _cap(ctx, cmd))


@handles(c.VerifyChainCmd)
async def verify_chain(ctx: HasStorage, cmd: c.VerifyChainCmd) -> c.VerifyChainReply:
    links = await ctx.storage.verify_chain(cmd.storagePath, cmd.volumePath)
    return c.VerifyChainReply(
        chain=[
            c.ChainLinkTO(path=li.path, backingFile=li.backing, size=li.virtual_size, actualSize=li.actual_size)
            for li in links
        ],
        **await _cap(ctx, cmd),
    )


@handles(c.GetMd5Cmd)
async def get_md5(ctx: HasStorage, cmd: c.GetMd5Cmd) -> c.GetMd5Reply:
    bits = await ctx.storage.bits(cmd.storagePath, [m.path for m in cmd.md5s], with_md5=True)
    out = []
    for m, b in zip(cmd.md5s, bits, strict=True):
        if not b.existing or b.md5 is None:
            raise AgentError(
                "STORAGE.NOT_FOUND",
                f"{m.path} does not exist on this host",
                status=404,
                details={"field": "path", "value": m.path},
            )
        out.append(c.Md5ResultTO(resourceUuid=m.resourceUuid, path=b.path, md5=b.md5))
    return c.GetMd5Reply(md5s=out, **await _cap(ctx, cmd))


@handles(c.CheckBitsCmd)
async def check_bits(ctx: HasStorage, cmd: c.CheckBitsCmd) -> c.CheckBitsReply:
    bits = await ctx.storage.bits(cmd.storagePath, cmd.paths, with_md5=cmd.withMd5)
    return c.CheckBitsReply(
        bits=[c.BitsTO(path=b.path, existing=b.existing, size=b.size, md5=b.md5) for b in bits],
        **await _cap(ctx, cmd),
    )


@handles(c.CopyToRemoteCmd)
async def copy_to_remote(ctx: HasStorage, cmd: c.CopyToRemoteCmd) -> c.CopyToRemoteReply:
    copied = await ctx.storage.copy_to_remote(
        cmd.storagePath, cmd.paths, cmd.destAgentUrl, cmd.destToken, cmd.baseImagePath
    )
    return c.CopyToRemoteReply(
        copied=[
            c.CopiedTO(path=x.path, size=x.size, allocatedSize=x.allocated, checksum=x.checksum, skipped=x.skipped)
            for x in copied
        ],
        **await _cap(ctx, cmd),
    )


@handles(c.ExportCmd)
async def export_volume(ctx: HasStorage, cmd: c.ExportCmd) -> c.ExportReply:
    done = await ctx.storage.export_to_sftp(cmd.storagePath, cmd.installPath, cmd.url, cmd.sftpPassword,
                                           cmd.sftpHostKey)
    return c.ExportReply(size=done.size, md5=done.md5, virtualSize=done.virtual_size, **await _cap(ctx, cmd))


@handles(c.IssueTicketCmd)
async def issue_ticket(ctx: Any, cmd: c.IssueTicketCmd) -> c.IssueTicketReply:
    st = ctx.storage.local(cmd.storagePath)
    files = {str(st.layout.contain(f.path, "files")): f.size for f in cmd.files}
    return c.IssueTicketReply(ticket=ctx.tickets.issue(str(st.layout.root), files, idle=cmd.idle,
                                                       max_age=cmd.maxAge))


@handles(c.RevokeTicketCmd)
async def revoke_ticket(ctx: Any, cmd: c.RevokeTicketCmd) -> c.RevokeTicketReply:
    return c.RevokeTicketReply(revoked=ctx.tickets.revoke(cmd.ticket))


@handles(c.DeleteBitsCmd)
async def delete_bits(ctx: HasStorage, cmd: c.DeleteBitsCmd) -> c.DeleteBitsReply:
    deleted = await ctx.storage.delete_paths(cmd.storagePath, cmd.paths)
    return c.DeleteBitsReply(deleted=deleted, **await _cap(ctx, cmd))


@handles(c.InspectImageCmd)
async def inspect_image(ctx: HasStorage, cmd: c.InspectImageCmd) -> c.InspectImageReply:
    fmt, info = await ctx.storage.inspect(cmd.path, cmd.format)
    return c.InspectImageReply(
        path=cmd.path,
        format=fmt,  # type: ignore[arg-type]
        virtualSize=info.virtual_size,
        actualSize=info.actual_size,
    )


# ---------------------------------------------------------------- raw endpoint


def _headers(request: web.Request) -> tuple[str, int, int]:
    """``X-Zs-Path``, ``X-Zs-Size`` and ``X-Zs-Stream`` (default 1), checked (InvalidArgument)."""
    size_s = request.headers.get("X-Zs-Size", "")
    if not size_s.isdigit():
        raise InvalidArgument(
            f"header X-Zs-Size {size_s!r} must be a non-negative integer",
            details={"field": "X-Zs-Size", "value": size_s},
        )
    version_s = request.headers.get("X-Zs-Stream", "1")
    if not version_s.isdigit():
        raise InvalidArgument(
            f"header X-Zs-Stream {version_s!r} must be a copy stream version number",
            details={"field": "X-Zs-Stream", "value": version_s},
        )
    return request.headers.get("X-Zs-Path", ""), int(size_s), int(version_s)


def _take_socket(request: web.Request) -> RawBody | None:
    """Take the connection over from aiohttp for the rest of the body (None when it cannot: TLS, no
    Content-Length). aiohttp stops reading; the body bytes it had buffered become ``prefix``; the returned
    socket is a blocking dup with a receive timeout, the caller answers on it and closes the connection."""
    transport = request.transport
    length = request.content_length
    if transport is None or length is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    transport.pause_reading()
    prefix = request.content.read_nowait(-1)
    transport.pause_reading()  # reading the buffer may have resumed it (aiohttp's flow control)
    raw = socket.socket(fileno=os.dup(sock.fileno()))
    raw.setblocking(True)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", IDLE_TIMEOUT, 0))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 30, 0))
    return RawBody(raw, prefix, length)


def _linger(sock: socket.socket) -> None:
    """After an early error reply: stop sending and read (discard) what the peer still sends, for at most
    :data:`LINGER` seconds, so closing does not reset the connection before the peer read the reply."""
    deadline = time.monotonic() + LINGER
    sock.shutdown(socket.SHUT_WR)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
    buf = bytearray(1 << 20)
    while time.monotonic() < deadline and sock.recv_into(buf):
        pass


async def _answer(request: web.Request, raw: RawBody, status: int, body: dict[str, Any]) -> web.Response:
    """Write the HTTP response on the taken-over socket and close the connection. The returned response
    is what aiohttp logs; it cannot write it any more (the transport is closed)."""
    data = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    try:
        await asyncio.to_thread(raw.sock.sendall, head.encode() + data)
        if status != 200:
            await asyncio.to_thread(_linger, raw.sock)
    except OSError:
        pass  # the sender is gone: it sees the failure as a lost connection
    finally:
        raw.sock.setblocking(False)  # the dup shares O_NONBLOCK with aiohttp's socket
        raw.sock.close()
        if request.transport is not None:
            request.transport.close()
    return web.json_response(body, status=status)


def _receive_handler(
    get: Callable[[web.Request], StorageService],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def receive(request: web.Request) -> web.Response:
        """``POST /localstorage/receive``: headers ``X-Zs-Path``, ``X-Zs-Size`` and ``X-Zs-Stream`` (wire
        version, default 1), body = frames (see ``storage.migrate``). Replies :class:`ReceiveReply`
        once the file is complete and verified. Bad headers and paths are refused before the body is
        read; then the body is read straight from the socket (``storage.rawrecv``) and the reply is
        written there too (``Connection: close``), or through aiohttp when the socket is not available."""
        service = get(request)
        try:
            path, size, version = _headers(request)
            service.receive_path(path)
        except StorageError as e:
            return error_response(e)
        raw = _take_socket(request)
        try:
            got = await service.receive_file(raw or request.content, path, size, version)
        except StorageError as e:
            if raw is None:
                return error_response(e)
            return await _answer(request, raw, e.status, e.body())
        except BaseException:
            if raw is not None:
                await _answer(request, raw, 500, AgentError("AGENT.INTERNAL", "receive failed", status=500).body())
            raise
        reply = c.ReceiveReply(path=got.path, size=got.size, allocated=got.allocated, checksum=got.checksum)
        if raw is None:
            return web.json_response(reply.model_dump())
        return await _answer(request, raw, 200, reply.model_dump())

    return receive


def raw_routes(ctx: HasStorage | None = None) -> list[web.RouteDef]:
    """Routes whose body is not JSON. The server mounts them behind the same bearer-token check as the
    JSON endpoints. The service is ``ctx.storage`` when ``ctx`` is given, else ``app[STORAGE_KEY]``."""

    def get(request: web.Request) -> StorageService:
        return ctx.storage if ctx is not None else request.config_dict[STORAGE_KEY]

    return [web.post(RECEIVE_PATH, _receive_handler(get))]
