"""Test helper: an in-process agent app on loopback serving the storage endpoints.

A minimal aiohttp app that mounts exactly the registered storage handlers and :func:`raw_routes` behind
a bearer-token check, with the agent's error envelope (``kvmagent.server`` did not exist yet).

Two agents of one local primary storage keep files at identical absolute paths, which on one machine
means the same files. :class:`NamespacedAgent` therefore runs the destination agent as a child process
in its own mount namespace (``unshare --mount``) where the PS url is a bind mount of another directory:
same paths, different bits, loopback networking shared. Run as ``python storage_agent.py --state DIR
--ps-url URL --ps-dir DIR --token T``: prints its URL, serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
from aiohttp import web

import kvmagent.handlers.storage as storage_handlers
from kvmagent.contract.base import AgentError, AgentRequest
from kvmagent.contract.tls import server_context
from kvmagent.routing import ENDPOINTS, error_response
from storage.service import StorageService
from zsutil.errors import CodedError


@dataclass
class Ctx:
    storage: StorageService


TOKEN = web.AppKey("token", str)
#: Large socket read buffer for the raw copy endpoint (the default 64 KiB costs ~3x in throughput).
READ_BUFSIZE = 4 << 20


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.headers.get("Authorization") != f"Bearer {request.app[TOKEN]}":
        return web.json_response(AgentError("AGENT.UNAUTHORIZED", "bad token", status=401).body(), status=401)
    return await handler(request)


def _json_handler(ctx: Ctx, ep: Any) -> Any:
    async def handle(request: web.Request) -> web.Response:
        try:
            cmd = ep.request.model_validate(await request.json())
            reply = await ep.handler(ctx, cmd)
        except pydantic.ValidationError as e:
            return web.json_response(AgentError("AGENT.INVALID", str(e), status=400).body(), status=400)
        except CodedError as e:
            return error_response(e)
        return web.json_response(reply.model_dump())

    return handle


def minimal_app(service: StorageService, token: str) -> web.Application:
    app = web.Application(middlewares=[_auth])
    app[TOKEN] = token
    ctx = Ctx(service)
    for path, ep in ENDPOINTS.items():
        if ep.handler.__module__ == storage_handlers.__name__:
            app.router.add_post(path, _json_handler(ctx, ep))
    app.router.add_routes(storage_handlers.raw_routes(ctx))
    return app


class Agent:
    """One running agent on 127.0.0.1:<random port> with its own state dir and token."""

    def __init__(self, state_dir: Path, token: str | None = None, tls: tuple[str, str] | None = None) -> None:
        self.service = StorageService(state_dir=state_dir)
        self.token = token or secrets.token_hex(16)
        self.tls = tls  # (certificate, key): serve HTTPS
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> Agent:
        await self.service.start()
        self.runner = web.AppRunner(minimal_app(self.service, self.token), read_bufsize=READ_BUFSIZE)
        await self.runner.setup()
        ssl_context = server_context(*self.tls) if self.tls else None
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self.http:
            await self.http.close()
        if self.runner:
            await self.runner.cleanup()
        await self.service.stop()

    async def call(self, cmd: AgentRequest, *, expect: int = 200) -> Any:
        """POST a command; return the typed reply (200) or the error body (any other expected status)."""
        assert self.http is not None
        async with self.http.post(
            self.url + cmd.PATH,
            json=cmd.model_dump(exclude_none=True),
            headers={"Authorization": f"Bearer {self.token}", "X-Request-Id": secrets.token_hex(8)},
        ) as resp:
            body = await resp.json()
            assert resp.status == expect, (resp.status, body)
            return cmd.Reply.model_validate(body) if resp.status == 200 else body


class NamespacedAgent:
    """The destination agent: a child process in a private mount namespace with ``ps_dir`` bind-mounted
    on ``ps_url``. :meth:`kill` is a real crash (SIGKILL)."""

    def __init__(self, state_dir: Path, ps_url: Path, ps_dir: Path, tls: tuple[str, str] | None = None) -> None:
        self.state_dir, self.ps_url, self.ps_dir = state_dir, ps_url, ps_dir
        self.tls = tls
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    async def start(self) -> NamespacedAgent:
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            __file__,
            "--state",
            str(self.state_dir),
            "--ps-url",
            str(self.ps_url),
            "--ps-dir",
            str(self.ps_dir),
            "--token",
            self.token,
            *(["--tls-cert", self.tls[0], "--tls-key", self.tls[1]] if self.tls else []),
        ]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
        line = await asyncio.to_thread(self.proc.stdout.readline)  # type: ignore[union-attr]
        if not line.startswith(("http://", "https://")):
            self.kill()
            raise RuntimeError(f"namespaced agent failed to start: {line!r}")
        self.url = line.strip()
        return self

    def nsenter(self, *argv: str) -> list[str]:
        """argv to run a command in the agent's mount namespace."""
        assert self.proc is not None
        return ["nsenter", "-t", str(self.proc.pid), "-m", *argv]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


async def _serve(args: argparse.Namespace) -> None:
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    agent = await Agent(Path(args.state), token=args.token, tls=tls).start()
    print(agent.url, flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes stdin (or kills us)
    await agent.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    for opt in ("--state", "--ps-url", "--ps-dir", "--token"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    os.makedirs(args.ps_url, exist_ok=True)
    os.makedirs(args.ps_dir, exist_ok=True)
    subprocess.run(["mount", "--bind", args.ps_dir, args.ps_url], check=True)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
