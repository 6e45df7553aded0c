"""HTTP client for the controller API (stdlib ``urllib``: starts fast, no event loop).

``POST /v1/{ApiName}`` with a JSON body and ``Authorization: OAuth <session>``; the request waits for
long work (the controller's default). Every failure is one of two exceptions with an operator-ready
message: :class:`ConnectionFailure` (nothing answered properly) and :class:`ApiError` (the controller
answered ``success: false``).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 1800.0  # seconds; 1.0's default message timeout (30 min)


class ConnectionFailure(Exception):
    """The controller could not be reached or did not answer with JSON."""


@dataclass(eq=False)
class ApiError(Exception):
    """The controller answered an error (``success: false``)."""

    api: str
    status: int
    code: str
    description: str
    details: str = ""
    reply: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"{self.api} failed (HTTP {self.status}, {self.code}): {self.description}"
        if self.details and self.details != self.description:
            text += f": {self.details}"
        return text


def make_url(host: str | None, port: int | None, env_url: str | None, *, https: bool = False) -> str:
    """The base URL: ``-H``/``-p`` win, then ``$ZSTACK_URL``, then ``http://127.0.0.1:8080`` (``https://``
    with ``https``: a controller serving its API over TLS, ``api_tls``)."""
    if host is None and port is None and env_url:
        return env_url.rstrip("/")
    return f"{'https' if https else 'http'}://{host or '127.0.0.1'}:{port or 8080}"


def tls_context(ca: str | None) -> ssl.SSLContext:
    """The client context for an https controller: with ``ca`` (a PEM file, e.g. the controller's
    ``pki/ca.crt``) only that CA is trusted; without it, the system's CAs (an operator-provided certificate).
    The controller's name is always checked."""
    if ca is None:
        return ssl.create_default_context()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=ca)
    return ctx


class Client:
    """A blocking client of one controller. Thread-compatible, holds no connection between calls.

    Proxy variables (``http_proxy``...) are honoured except for a loopback controller, which is always
    reached directly.
    """

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT, *, ca: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        direct = host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})] if direct else []
        handlers.append(urllib.request.HTTPSHandler(context=tls_context(ca)))
        self._opener = urllib.request.build_opener(*handlers)

    def _headers_and_wait(self, body: dict[str, Any], session: str | None) -> tuple[dict[str, str], float]:
        """A call's JSON headers (with the session) and how long to wait: a ``timeout`` in ``body``
        (milliseconds, as in 1.0) lengthens the wait accordingly."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if session:
            headers["Authorization"] = f"OAuth {session}"
        wait = self.timeout
        if isinstance(body.get("timeout"), int) and body["timeout"] > 0:
            wait = max(wait, body["timeout"] / 1000 + 30)
        return headers, wait

    def call(self, api: str, body: dict[str, Any], session: str | None = None) -> dict[str, Any]:
        """Run one API and return its reply; raises ApiError or ConnectionFailure.

        A ``timeout`` in ``body`` (milliseconds, as in 1.0) lengthens the wait accordingly.
        """
        headers, wait = self._headers_and_wait(body, session)
        data = json.dumps(body).encode()
        url = f"{self.base_url}/v1/{api}"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        status, reply = self._send(request, wait)
        if status >= 400 or reply.get("success") is False:
            raise _api_error(api, status, reply)
        return reply

    def call_job(self, api: str, body: dict[str, Any], session: str | None,
                 on_progress: Callable[[dict[str, Any]], None], interval: float = 1.0) -> dict[str, Any]:
        """Run a job API in the background (``?async=true``) and poll ``GET /v1/jobs/<uuid>`` every ``interval``
        seconds, handing each ``progress`` the job shows to ``on_progress``; the job's reply as :meth:`call`
        returns it (ApiError for a failed job)."""
        headers, wait = self._headers_and_wait(body, session)
        request = urllib.request.Request(f"{self.base_url}/v1/{api}?async=true", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        status, reply = self._send(request, min(wait, 120.0))
        if status >= 400 or reply.get("success") is False:
            raise _api_error(api, status, reply)
        job_uuid = reply.get("jobUuid")
        if status != 202 or not isinstance(job_uuid, str):
            return reply  # not a job: the reply itself
        deadline = time.monotonic() + wait
        get_headers = {k: v for k, v in headers.items() if k != "Content-Type"}
        while True:
            time.sleep(interval)
            path = f"/v1/jobs/{urllib.parse.quote(job_uuid)}"
            status, job = self._send(urllib.request.Request(f"{self.base_url}{path}", headers=get_headers), 30.0)
            if status >= 400:
                raise _api_error(f"GET {path}", status, job)
            if job.get("state") != "Processing":
                result: dict[str, Any] = job["result"] if isinstance(job.get("result"), dict) else {}
                code: int = job["httpStatus"] if isinstance(job.get("httpStatus"), int) else 200
                if code >= 400 or result.get("success") is False:
                    raise _api_error(api, code, result)
                return result
            if isinstance(job.get("progress"), dict):
                on_progress(job["progress"])
            if time.monotonic() > deadline:
                raise ConnectionFailure(f"{api} did not finish within {wait:.0f} s; it still runs: poll {path}")

    def get_json(self, path: str, timeout: float = 30.0) -> dict[str, Any]:
        """GET a JSON document (e.g. ``/v1/openapi.json``); non-2xx raises ApiError."""
        request = urllib.request.Request(f"{self.base_url}{path}", headers={"Accept": "application/json"})
        status, reply = self._send(request, timeout)
        if status >= 400:
            raise _api_error(f"GET {path}", status, reply)
        return reply

    def _send(self, request: urllib.request.Request, timeout: float) -> tuple[int, dict[str, Any]]:
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, self._decode(response.read(), response.status)
        except urllib.error.HTTPError as e:
            with e:
                return e.code, self._decode(e.read(), e.code, strict=False)
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise ConnectionFailure(
                    f"the controller at {self.base_url} presented a certificate that cannot be verified "
                    f"({e.reason.verify_message}); pass --ca with the controller's CA certificate "
                    "(its pki/ca.crt) or the CA of the certificate it was given"
                ) from None
            raise ConnectionFailure(self._unreachable(e.reason)) from None
        except TimeoutError:
            raise ConnectionFailure(
                f"the ZStack-Py controller at {self.base_url} did not answer within {timeout:.0f} s"
            ) from None
        except (ConnectionError, OSError) as e:
            raise ConnectionFailure(self._unreachable(e)) from None

    def _unreachable(self, reason: object) -> str:
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror
        else:
            why = str(reason)
        return (f"cannot reach the ZStack-Py controller at {self.base_url}: {why}; "
                "start it with `zstack-ctl start`")

    def _decode(self, raw: bytes, status: int, strict: bool = True) -> dict[str, Any]:
        try:
            reply = json.loads(raw) if raw else {}
        except ValueError:
            reply = None
        if isinstance(reply, dict):
            return reply
        if strict:
            excerpt = raw[:200].decode(errors="replace")
            raise ConnectionFailure(
                f"the server at {self.base_url} answered HTTP {status} with something that is not a JSON "
                f"object ({excerpt!r}); is it a ZStack-Py controller?"
            )
        return {"success": False, "_raw": raw[:500].decode(errors="replace")}


def _api_error(api: str, status: int, reply: dict[str, Any]) -> ApiError:
    error = reply.get("error")
    if isinstance(error, dict):
        return ApiError(
            api, status, str(error.get("code") or "unknown"), str(error.get("description") or ""),
            str(error.get("details") or ""), reply,
        )
    raw = reply.get("_raw") or json.dumps(reply)
    no_body = "the controller gave no ZStack error body"
    return ApiError(api, status, f"HTTP.{status}", no_body, str(raw), reply)
