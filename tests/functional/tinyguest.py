"""Reusable helpers for tests that boot the tiny guest image (scripts/build-tiny-image).

* :func:`build_image` builds (or reuses) the image and returns the artifact directory.
* :class:`SerialLog` follows a serial console log file (qemu ``-serial file:``, libvirt
  ``<serial type='file'>``) and waits for a regex, failing with the log tail.
* :class:`Netns` is an empty network namespace (only ``lo``), removed on exit: slirp inside it can
  reach nothing but that namespace's loopback.
* :func:`metadata_map` builds a CloudStack/EC2 metadata tree, served by running this file as
  ``python3 tinyguest.py metadata MAP.json [--listen HOST:PORT]`` (without --listen it answers one
  request on stdin/stdout, the form qemu's ``guestfwd=...-cmd:`` needs). Requests go to MAP.json.log.
* :class:`Qemu` starts ``qemu-system-x86_64 -accel tcg`` with a QMP socket (power button, quit).
* :func:`ssh` / :func:`wait_ssh` run the system ssh client with a test key.

The guest prints these console markers: ``tiny: booted from disk|cdrom``, ``tiny: LEASE <nic> <ip>/<mask>
...``, ``tiny: drivers ready``, ``tiny-cloudinit: metadata from <url>``, ``tiny-cloudinit: hostname <h>``,
``tiny-cloudinit: | <user-data line>``, ``tiny-cloudinit: > <runcmd/script output>``, ``tiny-cloudinit:
user-data applied (<kind>)``, ``tiny: sshd up``, ``tiny: power button -> poweroff``.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "scripts" / "build-tiny-image"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]
_ns_ids = itertools.count()


def build_image(out: Path | None = None, force: bool = False) -> Path:
    """Run the builder (cached unless ``force``) and return the directory holding tiny.qcow2/tiny.iso."""
    argv = [sys.executable, str(BUILDER), *(["--out", str(out)] if out else []),
            *(["--force"] if force else [])]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"build-tiny-image failed (exit {r.returncode}):\n{r.stderr}")
    return Path(r.stdout.splitlines()[0]).parent


class SerialLog:
    """A growing console log file. Waits are polled (50 ms), so the writer may be any process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return ""
        return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1bc", "", raw.decode(errors="replace")).replace("\r", "")

    def wait_for(self, pattern: str, timeout: float, alive: Qemu | None = None) -> re.Match[str]:
        """First match of ``pattern`` (multiline) in the log; AssertionError with the log tail on timeout
        or when ``alive`` (the qemu writing the log) has exited."""
        rx = re.compile(pattern, re.M)
        end = time.monotonic() + timeout
        while True:
            m = rx.search(self.text())
            if m:
                return m
            why = "qemu exited" if alive is not None and alive.proc.poll() is not None else ""
            if why or time.monotonic() > end:
                tail = "\n".join(self.text().splitlines()[-40:])
                raise AssertionError(f"{why or f'{timeout}s timeout'} waiting for /{pattern}/ in "
                                     f"{self.path}; last lines:\n{tail}")
            time.sleep(0.05)


class Netns:
    """An empty network namespace with ``lo`` up. Use as a context manager; deleted on exit."""

    def __init__(self, prefix: str = "tinyg") -> None:
        self.name = f"{prefix}-{os.getpid()}-{next(_ns_ids)}"

    def __enter__(self) -> Netns:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False)

    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]


def metadata_map(path: Path, *, instance_id: str, hostname: str, keys: Sequence[str], user_data: str,
                 style: str = "cloudstack") -> Path:
    """Write the metadata tree as JSON (URL path -> body). ``style``: "cloudstack" (public-keys is the
    key text) or "ec2" (public-keys lists ``N=name``, the key is at public-keys/N/openssh-key)."""
    md = "/latest/meta-data/"
    tree = {f"{md}instance-id": instance_id + "\n", f"{md}local-hostname": hostname + "\n",
            "/latest/user-data": user_data}
    if style == "ec2":
        tree[f"{md}public-keys"] = "".join(f"{i}=key{i}\n" for i in range(len(keys)))
        tree.update({f"{md}public-keys/{i}/openssh-key": k + "\n" for i, k in enumerate(keys)})
    elif style == "cloudstack":
        tree[f"{md}public-keys"] = "".join(k + "\n" for k in keys)
    else:
        raise ValueError(f"metadata style {style!r}: expected 'cloudstack' or 'ec2'")
    path.write_text(json.dumps(tree, indent=1))
    return path


def _lookup(tree: Mapping[str, str], url: str) -> str | None:
    path = "/" + url.split("?", 1)[0].strip("/")
    if path in tree:
        return tree[path]
    children = sorted({k[len(path) + 1:].split("/")[0] for k in tree if k.startswith(path + "/")})
    return "".join(c + "\n" for c in children) or None


def serve_metadata(map_path: Path, listen: str | None) -> None:
    """Serve ``map_path``: an HTTP server on ``listen`` (HOST:PORT), or one request on stdin/stdout."""
    tree = json.loads(map_path.read_text())
    logf = map_path.with_name(map_path.name + ".log")

    def answer(url: str) -> tuple[int, bytes]:
        with logf.open("a") as f:
            f.write(url + "\n")
        body = _lookup(tree, url)
        return (404, b"") if body is None else (200, body.encode())

    if listen is None:
        req = sys.stdin.buffer.readline().split()
        while sys.stdin.buffer.readline() not in (b"\r\n", b"\n", b""):
            pass
        code, body = answer(req[1].decode() if len(req) > 1 else "/")
        sys.stdout.buffer.write(b"HTTP/1.0 %d X\r\nContent-Length: %d\r\n\r\n" % (code, len(body)) + body)
        sys.stdout.buffer.flush()
        return

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = answer(self.path)
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    host, port = listen.rsplit(":", 1)
    http.server.ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


class Qemu:
    """A TCG qemu with its serial console in ``<workdir>/<name>.serial`` and a QMP socket.

    ``args`` are the device arguments (drives, netdevs). ``close()`` kills it if still running."""

    def __init__(self, workdir: Path, name: str, args: Sequence[str], netns: Netns | None = None,
                 memory_mb: int = 128) -> None:
        self.serial = SerialLog(workdir / f"{name}.serial")
        self.qmp_path = workdir / f"{name}.qmp"
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-display", "none",
                "-serial", f"file:{self.serial.path}", "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
                "-no-user-config", "-nodefaults", "-vga", "none", *args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(netns.argv(*argv) if netns else argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=(workdir / f"{name}.stderr").open("w"))

    def qmp(self, command: str) -> dict[str, object]:
        """Run one QMP command (after the capabilities handshake) and return its reply."""
        end = time.monotonic() + 10
        while not self.qmp_path.exists() and time.monotonic() < end:
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            f.readline()
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    reply: dict[str, object] = json.loads(f.readline())
                    if "event" not in reply:
                        break
            return reply

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def slirp_nic(index: int, *, net: str | None = None, ssh_port: int | None = None,
              guestfwd: str | None = None) -> list[str]:
    """Arguments for one virtio NIC on a slirp (user-mode) network."""
    opts = [f"user,id=n{index}"]
    if net:
        opts.append(f"net={net}")
    if ssh_port:
        opts.append(f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22")
    if guestfwd:
        opts.append(f"guestfwd={guestfwd}")
    return ["-netdev", ",".join(opts), "-device", f"virtio-net-pci,netdev=n{index}"]


def ssh(port: int, key: Path, command: str, *, user: str = "root", netns: Netns | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-p", str(port), "-i", str(key), *SSH_OPTS, f"{user}@127.0.0.1", command]
    return subprocess.run(netns.argv(*argv) if netns else argv, capture_output=True, text=True,
                          timeout=timeout)


def wait_ssh(port: int, key: Path, command: str, *, timeout: float, **kw: object) -> str:
    """Retry ``ssh`` until it exits 0; return its stdout. AssertionError with the last error otherwise."""
    end = time.monotonic() + timeout
    while True:
        r = ssh(port, key, command, **kw)  # type: ignore[arg-type]
        if r.returncode == 0:
            return r.stdout
        if time.monotonic() > end:
            raise AssertionError(f"ssh {command!r} failed (exit {r.returncode}): {r.stderr.strip()}")
        time.sleep(0.3)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "metadata":
        serve_metadata(Path(sys.argv[2]), sys.argv[4] if sys.argv[3:4] == ["--listen"] else None)
    else:
        sys.exit("usage: tinyguest.py metadata MAP.json [--listen HOST:PORT]")
