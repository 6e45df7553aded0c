"""Test metadata server (EC2 layout) run inside a DHCP namespace; stdlib only.

It identifies the VM by the request's **source IP** (looked up in a JSON file re-read on every request),
listens on 0.0.0.0:80 so it answers at 169.254.169.254 and at the DHCP server address alike, and logs each
request as one JSON line ``{"src", "dst", "path", "status", "instance_id"}`` (dst: the address the guest
used). It writes its pid file after binding, so a caller that waits for the pid file can send requests.

    python3 metadata_server.py --data guests.json --log requests.jsonl --pidfile md.pid
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(guest: dict, path: str) -> str | None:
    """Body for ``path`` of the EC2 metadata tree, or None for 404."""
    keys = guest.get("public_keys", [])
    md = "/latest/meta-data/"
    fixed = {
        "/latest/user-data": guest.get("user_data"),
        md + "instance-id": guest.get("instance_id"),
        md + "local-hostname": guest.get("hostname"),
        md + "local-ipv4": guest.get("ip"),
        md + "public-keys": "\n".join(f"{i}=key{i}" for i in range(len(keys))) if keys else None,
        md: "instance-id\nlocal-hostname\nlocal-ipv4\npublic-keys\n",
    }
    if path in fixed:
        return fixed[path]
    parts = path[len(md):].split("/") if path.startswith(md + "public-keys/") else []
    if len(parts) == 3 and parts[1].isdigit() and int(parts[1]) < len(keys) and parts[2] == "openssh-key":
        return keys[int(parts[1])] + "\n"
    return None


def make_handler(data_file: str, log_file: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            src = self.client_address[0]
            with open(data_file) as f:
                guest = json.load(f).get(src)
            body = answer(guest, self.path.split("?")[0]) if guest else None
            status = 200 if body is not None else 404
            raw = (body if body is not None else f"unknown caller {src} or path {self.path}\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            entry = {"src": src, "dst": self.connection.getsockname()[0], "path": self.path, "status": status,
                     "instance_id": guest.get("instance_id") if guest else None}
            with open(log_file, "a") as f:
                f.write(json.dumps(entry) + "\n")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--port", type=int, default=80)
    a = p.parse_args()
    server = ThreadingHTTPServer(("0.0.0.0", a.port), make_handler(a.data, a.log))
    with open(a.pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(a.pidfile + ".tmp", a.pidfile)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
