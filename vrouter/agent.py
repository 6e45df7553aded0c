"""The router agent: HTTP/1.1 with a bearer token, served on the virtio-serial port ``CHANNEL_NAME`` (the
host's agent relays the controller's calls through the domain's unix socket, so the controller needs no route
to the router), one request at a time.

Endpoints (JSON bodies):
* ``POST /init {uuid, token}`` -- trust on first use: the first init over the channel (which only root on the
  host can open) sets the router's uuid and token; later inits must carry the same token.
* ``POST /ping`` -> ``{uuid, version, generation, digest}`` (``digest``: vrouter.contract.code_digest of the
  code the agent runs).
* ``POST /apply <state>`` -> ``{generation, seconds}``: the whole desired state (see vrouter.render); NIC
  addresses (only the differences, over netlink), the nftables table (one atomic transaction) and dnsmasq's
  files (SIGHUP when only its hosts/options changed); idempotent. ``seconds``: where the time went.
* ``POST /upgrade {files: {name: source}, digest}`` -> ``{digest, restarting}``: the controller's agent code
  (every ``*.py`` of the package, checked against ``digest`` and compiled before anything is replaced) replaces
  the agent's; the agent then exits and busybox init starts it again with the new code. The router's data
  plane (addresses, rule set, dnsmasq) is left as it is.
Every call but the first init needs ``Authorization: Bearer <token>``. The identity (uuid, token) and the
applied generation are kept in ``identity.json`` (0600, under /run: lost at reboot, kept across an agent
restart), so a restarted agent keeps answering the controller.
"""

from __future__ import annotations

import hmac
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vrouter import CHANNEL_NAME, VERSION, netlink, render
from vrouter.contract import code_digest, code_files

RUN = Path(render.RUN_DIR)
PACKAGE = Path(__file__).resolve().parent
_MODULE = re.compile(r"^[a-z_][a-z0-9_]{0,40}\.py$")
MAX_CODE = 1 << 20


def log(msg: str) -> None:
    print(f"vrouter: {msg}", file=sys.stderr, flush=True)


def run(*argv: str, stdin: str | None = None) -> str:
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)!r} failed (exit {r.returncode}): {r.stderr.strip()}")
    return r.stdout


def ifnames() -> dict[str, str]:
    out = {}
    for d in Path("/sys/class/net").iterdir():
        if d.name != "lo":
            out[(d / "address").read_text().strip().lower()] = d.name
    return out


class Router:
    def __init__(self, state_dir: Path | None = None, package: Path = PACKAGE) -> None:
        self.uuid: str | None = None
        self.token: str | None = None
        self.generation = 0
        self.state_dir, self.package = state_dir, package
        self.digest = code_digest(code_files(package))
        if state_dir is not None:
            try:
                saved = json.loads((state_dir / "identity.json").read_text())
                self.uuid, self.token, self.generation = saved["uuid"], saved["token"], int(saved["generation"])
            except (OSError, ValueError, KeyError, TypeError):
                pass

    def _save(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / ".identity.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"uuid": self.uuid, "token": self.token, "generation": self.generation}, f)
        os.replace(tmp, self.state_dir / "identity.json")

    def init(self, body: dict[str, Any], auth: str | None) -> dict[str, Any]:
        token, uuid = body.get("token"), body.get("uuid")
        if not isinstance(token, str) or len(token) < 32 or not isinstance(uuid, str) or not uuid:
            raise ValueError("init needs uuid (a string) and token (a string of at least 32 characters)")
        if self.token is not None and not self.authorized(auth):
            raise PermissionError("already initialised: init again with the router's token")
        self.uuid, self.token = uuid, token
        self._save()
        return self.ping()

    def authorized(self, auth: str | None) -> bool:
        return (self.token is not None and auth is not None and
                hmac.compare_digest(auth.encode(), f"Bearer {self.token}".encode()))

    def ping(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "version": VERSION, "generation": self.generation, "digest": self.digest}

    def apply(self, state: dict[str, Any]) -> dict[str, Any]:
        """Apply the whole state; the reply carries the generation and where the time went (seconds)."""
        t0 = time.monotonic()
        gen = state.get("generation")
        if not isinstance(gen, int) or gen < 0:
            raise render.StateError(f"generation: {gen!r} is not a non-negative integer")
        names = ifnames()
        plan = render.nic_plan(state, names)
        ruleset = render.nft_ruleset(state, names)
        files = render.dnsmasq_files(state, names)
        t1 = time.monotonic()
        self._links(plan)
        t2 = time.monotonic()
        RUN.mkdir(parents=True, exist_ok=True)
        (RUN / "ruleset.nft").write_text(ruleset)
        run("nft", "-f", str(RUN / "ruleset.nft"))
        t3 = time.monotonic()
        self._dnsmasq(files)
        t4 = time.monotonic()
        self.generation = gen
        self._save()
        return {"generation": gen, "seconds": {"render": round(t1 - t0, 4), "addresses": round(t2 - t1, 4),
                                               "nft": round(t3 - t2, 4), "dnsmasq": round(t4 - t3, 4)}}

    def upgrade(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the agent's code by ``files`` (all or nothing: checked and compiled first)."""
        files, digest = body.get("files"), body.get("digest")
        if not isinstance(files, dict) or not files or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("files: expected an object of file name -> source text")
        bad = sorted(k for k in files if not _MODULE.match(k))
        if bad:
            raise ValueError(f"files: {bad} are not module file names (lower-case, ending in .py)")
        missing = sorted({"__init__.py", "agent.py"} - set(files))
        if missing:
            raise ValueError(f"files: {missing} missing (the whole package is pushed)")
        if sum(len(v) for v in files.values()) > MAX_CODE:
            raise ValueError(f"files: more than {MAX_CODE} characters of code")
        if not isinstance(digest, str) or code_digest(files) != digest:
            raise ValueError(f"digest: {digest!r} is not the digest of the files pushed")
        for name, text in files.items():
            try:
                compile(text, name, "exec")
            except SyntaxError as e:
                raise ValueError(f"files: {name} does not compile: {e}") from None
        for name, text in files.items():
            tmp = self.package / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.package / name)
        for old in self.package.glob("*.py"):
            if old.name not in files:
                old.unlink()
        # the image's byte code is compiled with unchecked hashes: it would shadow the new sources
        shutil.rmtree(self.package / "__pycache__", ignore_errors=True)
        self.digest = digest
        log(f"agent code replaced (digest {digest[:16]}); restarting")
        return {"digest": digest, "restarting": True}

    def restart(self) -> None:
        """Exit: busybox init respawns the agent (/usr/sbin/vrouter-agent), which loads the new code."""
        os._exit(0)

    @staticmethod
    def _links(plan: list[dict[str, Any]]) -> None:
        """NICs up, their addresses (own + VIPs) exactly as planned, the default route: only what differs is
        changed, in-process over netlink (hundreds of VIPs would otherwise be hundreds of ``ip`` runs)."""
        have: dict[str, list[str]] = {}
        for line in run("ip", "-o", "-4", "addr", "show").splitlines():
            f = line.split()
            if len(f) > 3 and f[2] == "inet":
                have.setdefault(f[1], []).append(f[3])
        with netlink.Route() as nl:
            for nic in plan:
                ifname, addresses = nic["ifname"], nic["addresses"]
                index = socket.if_nametoindex(ifname)
                if not netlink.is_up(ifname):
                    nl.link_up(index)
                current = have.get(ifname, [])
                for gone in (a for a in current if a not in addresses):
                    nl.address(netlink.RTM_DELADDR, index, gone)
                added = [a for a in addresses if a not in current]
                for new in added:
                    nl.address(netlink.RTM_NEWADDR, index, new)
                # tell the L2 about the (maybe moved) addresses
                netlink.gratuitous_arps(ifname, [a.split("/")[0] for a in added])
        for nic in plan:
            if nic["gateway"] and netlink.default_route() != (nic["ifname"], nic["gateway"]):
                run("ip", "route", "replace", "default", "via", nic["gateway"], "dev", nic["ifname"])

    @staticmethod
    def _dnsmasq(files: dict[str, str]) -> None:
        pidfile = RUN / "dnsmasq.pid"
        try:
            pid: int | None = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and not _dnsmasq_runs(pid):
            pid = None
        if not files:
            if pid:
                os.kill(pid, signal.SIGTERM)
            return
        old_conf = (RUN / "dnsmasq.conf").read_text() if (RUN / "dnsmasq.conf").exists() else None
        for name, text in files.items():
            tmp = RUN / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, RUN / name)
        if pid and old_conf == files["dnsmasq.conf"]:
            os.kill(pid, signal.SIGHUP)     # re-reads the hosts and options files
            return
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while _dnsmasq_runs(pid) and time.monotonic() < deadline:
                time.sleep(0.005)
        run("dnsmasq", f"--conf-file={RUN}/dnsmasq.conf")


def _dnsmasq_runs(pid: int) -> bool:
    """``pid`` is a dnsmasq that has not exited: an exited one waits as a zombie until init reaps it (up to
    seconds on some inits), and its sockets are already closed."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    name, _, rest = stat.partition(" (")[2].rpartition(") ")
    return name == "dnsmasq" and rest.split()[0] != "Z"


ROUTER = Router()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"zstack-vrouter/{VERSION}"

    def setup(self) -> None:   # the stream is the serial port, not a socket
        self.rfile, self.wfile = self.server.rfile, self.server.wfile  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            self.wfile.flush()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log(format % args)

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}") if length else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            return self.reply(400, {"error": f"bad request body: {e}"})
        auth = self.headers.get("Authorization")
        router: Router = getattr(self.server, "router", None) or ROUTER   # the channel's, else the process's
        try:
            if self.path == "/init":
                return self.reply(200, router.init(body, auth))
            if not router.authorized(auth):
                return self.reply(401, {"error": "missing or wrong bearer token"})
            if self.path == "/ping":
                return self.reply(200, router.ping())
            if self.path == "/apply":
                return self.reply(200, router.apply(body))
            if self.path == "/upgrade":
                self.reply(200, router.upgrade(body))
                router.restart()
                return None
            return self.reply(404, {"error": f"no such endpoint {self.path}"})
        except PermissionError as e:
            return self.reply(403, {"error": str(e)})
        except (ValueError, render.StateError) as e:
            return self.reply(400, {"error": str(e)})
        except Exception as e:
            log(f"{self.path} failed: {e}")
            return self.reply(500, {"error": str(e)})


class _Channel:
    """What the handler needs from a server: the port's streams."""

    def __init__(self, dev: str) -> None:
        fd = os.open(dev, os.O_RDWR)
        self.rfile = os.fdopen(fd, "rb", buffering=65536)
        self.wfile = os.fdopen(os.dup(fd), "wb", buffering=0)


def find_port(name: str = CHANNEL_NAME, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in sorted(Path("/sys/class/virtio-ports").glob("*")):
            try:
                if (d / "name").read_text().strip() == name:
                    return f"/dev/{d.name}"
            except OSError:
                pass
        time.sleep(0.2)
    raise SystemExit(f"vrouter: no virtio-serial port named {name}")


def serve(dev: str) -> None:
    chan = _Channel(dev)
    while True:
        # returns at EOF: the host side is not connected; the port reads EOF until someone connects
        Handler(None, ("channel", 0), chan)  # type: ignore[arg-type]
        time.sleep(0.1)


def prepare() -> None:
    """The router's setup before the first apply: its run directory, IPv4 forwarding on."""
    RUN.mkdir(parents=True, exist_ok=True)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")


def main() -> None:
    global ROUTER
    ROUTER = Router(RUN)  # the identity survives an agent restart (kept under /run)
    dev = find_port()
    prepare()
    print(f"vrouter: agent {VERSION} ready on {dev}", file=open("/dev/console", "w"), flush=True)
    serve(dev)


if __name__ == "__main__":
    main()
