"""Deploy the agent on a host over SSH (asyncssh, username/password), DESIGN.md "Controller ↔ agent contract".

Steps (each idempotent, so ReconnectHost reruns them safely):

1. Log in (a wrong password is a 400 naming the user and the host), only after the server proved it holds the
   host key recorded at first contact (``controller.sshkeys``: trust on first use; a changed key is a 409).
2. Install only when the host's stamp ``/var/lib/zstack-py/agent.stamp`` differs from the controller's
   (package version + digest of the agent's sources). If ``/opt/zstack-py/venv/bin/zstack-kvmagent``
   exists with the same package version it is reused (testbed hosts share this machine's filesystem);
   otherwise a wheel of this package (``pip wheel --no-deps``, cached in ``agent_package_dir``) is
   uploaded with SFTP and ``pip install``-ed into ``/opt/zstack-py/venv``.
3. Write ``/etc/zstack-py/kvmagent.yaml`` (host uuid, token, controller URL reachable from the host: the
   local address of the SSH connection + the controller's port, unless ``public_url`` is configured).
4. Start the agent: systemd unit ``zstack-py-kvmagent`` where systemd runs, else a ``setsid`` daemon with
   a pid file; restarted when the config changed or it is not running. Then wait for ``/readyz``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shlex
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import yaml

from controller import sealed, sshkeys
from controller.core import Controller
from controller.errors import InvalidArgument, OperationError
from controller.version import VERSION
from storage.runner import run

log = logging.getLogger(__name__)

VENV = "/opt/zstack-py/venv"
AGENT_BIN = f"{VENV}/bin/zstack-kvmagent"
CONFIG = "/etc/zstack-py/kvmagent.yaml"
STATE = "/var/lib/zstack-py"
STAMP = f"{STATE}/agent.stamp"
PIDFILE = f"{STATE}/kvmagent.pid"
UNIT = "zstack-py-kvmagent"
ROOT = Path(__file__).resolve().parents[2]
UNIT_TEXT = f"""[Unit]
Description=ZStack-Py KVM agent
After=network-online.target libvirtd.service

[Service]
ExecStart={AGENT_BIN} --config {CONFIG}
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


@lru_cache(maxsize=1)
def local_stamp() -> str:
    """Package version + sha256 over the sources the agent runs (kvmagent, storage, flatnet)."""
    h = hashlib.sha256()
    for pkg in ("kvmagent", "storage", "flatnet"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return f"{VERSION}:{h.hexdigest()}"


async def _sh(conn: asyncssh.SSHClientConnection, cmd: str, *, check: bool = True,
              stdin: str | None = None) -> str:
    r = await conn.run(cmd, check=False, input=stdin)
    if check and r.exit_status != 0:
        raise OperationError(f"command on host failed (rc={r.exit_status}): {cmd}: {str(r.stderr).strip()}")
    return str(r.stdout)


async def _login(core: Controller, host: dict[str, Any], accept: str | None = None) -> asyncssh.SSHClientConnection:
    """Log in with the host's password, after the server proved it holds the recorded host key (``sshkeys``;
    on first contact, or with ``accept``, the presented key is recorded)."""
    who = f"{host['username']}@{host['managementIp']}:{host['sshPort']}"
    recorded = host.get("sshHostKey")
    pin = await sshkeys.options(f"host {host['managementIp']}", host["managementIp"], host["sshPort"], recorded,
                                accept)
    try:
        conn = await asyncio.wait_for(asyncssh.connect(
            host["managementIp"], port=host["sshPort"], username=host["username"],
            password=sealed.unseal(core, host["password"]),
            client_keys=None, agent_path=None, **pin), 30)
    except asyncssh.HostKeyNotVerifiable as e:
        raise await sshkeys.changed(f"host[uuid:{host['uuid']}]", host["managementIp"], host["sshPort"],
                                    str(recorded), "ReconnectHost") from e
    except asyncssh.PermissionDenied as e:
        raise InvalidArgument(f"SSH login as user[{host['username']}] to host[{host['managementIp']}:"
                              f"{host['sshPort']}] was refused: wrong username or password") from e
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise OperationError(f"cannot SSH to {who}: {type(e).__name__}: {e}") from e
    try:
        seen = sshkeys.seen_of(conn)
        sshkeys.check_accept(f"host {host['managementIp']}:{host['sshPort']}", seen, accept)
    except BaseException:
        conn.close()
        raise
    if seen.key != recorded:
        async with core.db.write() as tx:
            await tx.update("Host", {"uuid": host["uuid"]}, {"sshHostKey": seen.key,
                                                             "sshHostKeyFingerprint": seen.fingerprint})
        log.info("recorded the SSH host key %s of host %s (%s)", seen.fingerprint, host["uuid"],
                 "accepted" if accept else "first contact")
    return conn


def _find_wheel(out: Path, *, create: bool = False) -> Path | None:
    if create:
        out.mkdir(parents=True, exist_ok=True)
    wheels = sorted(out.glob(f"zstack_py-{VERSION}-*.whl")) if out.is_dir() else []
    return wheels[-1] if wheels else None


async def build_wheel(core: Controller) -> Path:
    """The wheel of this package in ``agent_package_dir`` (built once per version)."""
    out = Path(core.config.agent_package_dir)
    wheel = await asyncio.to_thread(_find_wheel, out, create=True)
    if wheel is None:
        await run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)], timeout=600)
        wheel = await asyncio.to_thread(_find_wheel, out)
    if wheel is None:
        raise OperationError(f"pip wheel did not produce zstack_py-{VERSION}-*.whl in {out}")
    return wheel


async def _install(core: Controller, conn: asyncssh.SSHClientConnection) -> None:
    probe = (f"test -x {AGENT_BIN} && {VENV}/bin/python -c "
             "'import importlib.metadata as m; print(m.version(\"zstack-py\"))'")
    have = (await _sh(conn, probe, check=False)).strip()
    if have == VERSION:
        log.info("agent %s already installed in %s; reusing it", VERSION, VENV)
        return
    wheel = await build_wheel(core)
    await _sh(conn, f"mkdir -p {STATE}/packages")
    async with conn.start_sftp_client() as sftp:
        await sftp.put(str(wheel), f"{STATE}/packages/{wheel.name}")
    await _sh(conn, f"test -x {VENV}/bin/pip || python3 -m venv {VENV}")
    await _sh(conn, f"{VENV}/bin/pip install --upgrade {STATE}/packages/{shlex.quote(wheel.name)}")


def agent_config(host: dict[str, Any], controller_url: str, listen_ip: str) -> str:
    return yaml.safe_dump({"host_uuid": host["uuid"], "token": host["agentToken"],
                           "controller_url": controller_url, "listen_ip": listen_ip,
                           "port": host["agentPort"], "libvirt_uri": "qemu:///system", "domain_type": "auto",
                           "state_dir": STATE, "log_dir": "/var/log/zstack-py"}, sort_keys=True)


def agent_alive_sh(pidfile: str) -> str:
    """A shell test that is true when ``pidfile`` names a live agent of THIS host.

    A pid file can outlive its process and the pid be reused by anything; several hosts may also share one
    PID namespace (the testbed). So the pid must be a ``zstack-kvmagent`` process, in this shell's mount
    namespace, and not a zombie (a killed agent nobody reaped)."""
    pid = f"$(cat {pidfile} 2>/dev/null)"
    return (f"test -n \"{pid}\" && test -r /proc/{pid}/cmdline && "
            f"tr '\\0' ' ' < /proc/{pid}/cmdline | grep -q zstack-kvmagent && "
            f"test \"$(readlink /proc/{pid}/ns/mnt)\" = \"$(readlink /proc/self/ns/mnt)\" && "
            f"! grep -q '^State:[[:space:]]*Z' /proc/{pid}/status")


async def _start_agent(conn: asyncssh.SSHClientConnection, restart: bool) -> None:
    systemd = (await _sh(conn, "test -d /run/systemd/system && echo yes", check=False)).strip() == "yes"
    if systemd:
        await _sh(conn, f"cat > /etc/systemd/system/{UNIT}.service && systemctl daemon-reload && "
                        f"systemctl enable {UNIT}", stdin=UNIT_TEXT)
        await _sh(conn, f"systemctl {'restart' if restart else 'start'} {UNIT}")
        return
    alive = agent_alive_sh(PIDFILE)
    running = (await _sh(conn, f"{alive} && echo yes", check=False)).strip() == "yes"
    if running and not restart:
        return
    if running:
        await _sh(conn, f"{alive} && kill $(cat {PIDFILE}); for i in $(seq 50); do {alive} || break; sleep 0.1; "
                        "done", check=False)
    # `&` must apply to the redirected command alone: a backgrounded `a && b` list would keep the SSH
    # channel's stdout open and the command would never finish.
    await _sh(conn, f"mkdir -p /var/log/zstack-py {STATE}; setsid {AGENT_BIN} --config {CONFIG} "
                    f"</dev/null >>/var/log/zstack-py/kvmagent.out 2>&1 & echo $! > {PIDFILE}")


async def wait_ready(host: dict[str, Any], timeout: float = 60.0) -> None:
    """Until the agent's ``/readyz`` answers 200 (started and reconciled)."""
    url = f"http://{host['managementIp']}:{host['agentPort']}/readyz"
    headers = {"Authorization": f"Bearer {host['agentToken']}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession(trust_env=False) as s:
        while True:
            try:
                async with s.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if loop.time() > deadline:
                raise OperationError(f"the agent on host {host['managementIp']} did not answer {url} within "
                                     f"{timeout:.0f} s; see /var/log/zstack-py/kvmagent.out on the host")
            await asyncio.sleep(0.2)


async def deploy(core: Controller, host: dict[str, Any], *, new: bool, accept: str | None = None) -> str:
    """Make sure the current agent runs on ``host`` with the right config; returns the controller URL
    written into it (the connect sequence records it in ``HostAgent``)."""
    async with await _login(core, host, accept) as conn:
        local_ip = conn.get_extra_info("sockname")[0]
        peer_ip = conn.get_extra_info("peername")[0]
        url = core.config.public_url or f"http://{local_ip}:{core.config.port}"
        stamp = (await _sh(conn, f"cat {STAMP}", check=False)).strip()
        if stamp != local_stamp():
            await _install(core, conn)
            await _sh(conn, f"mkdir -p {STATE} && cat > {STAMP}", stdin=local_stamp() + "\n")
        text = agent_config(host, url, peer_ip)
        old = await _sh(conn, f"cat {CONFIG}", check=False)
        changed = old != text
        if changed:
            await _sh(conn, f"mkdir -p /etc/zstack-py && umask 077 && cat > {CONFIG}", stdin=text)
        await _start_agent(conn, restart=changed or stamp != local_stamp())
    await wait_ready(host)
    log.info("agent deployed on %s (new=%s, config changed=%s)", host["managementIp"], new, changed)
    return url
