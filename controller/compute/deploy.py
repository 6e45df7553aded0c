"""Deploy the agent on a host over SSH (asyncssh, username/password), DESIGN.md "Controller ↔ agent contract".

Steps (each idempotent, so ReconnectHost reruns them safely):

1. Log in (a wrong password is a 400 naming the user and the host), only after the server proved it holds the
   host key recorded at first contact (``controller.sshkeys``: trust on first use; a changed key is a 409).
2. Install only when the host's stamp ``/var/lib/zstack-py/agent.stamp`` differs from the controller's
   (package version + digest of the agent's sources). If the host's ``/opt/zstack-py/venv`` already runs the
   same agent sources (same digest, computed on the host over the installed modules: plain-mode testbed hosts
   share this machine's editable install) it is reused; otherwise a wheel of this package (``pip wheel
   --no-deps``, cached in ``agent_package_dir/<digest of the package sources>/``, so a wheel built from other
   code with the same version is never deployed) is uploaded with SFTP and ``pip install``-ed into
   ``/opt/zstack-py/venv`` (dependencies from the host's pip configuration: a testbed host's local wheelhouse).
3. With ``agent_tls`` (default): make sure the host holds a certificate from the controller's CA for its
   management IP, its key and the CA certificate (``controller.compute.agenttls``; issued again when missing,
   from another CA, for another address or near its end). Write ``/etc/zstack-py/kvmagent.yaml`` (host uuid,
   token, TLS files, controller URL reachable from the host: the local address of the SSH connection + the
   TLS events port, or the controller's port without TLS; ``public_url``'s host when it is configured).
4. Start the agent: systemd unit ``zstack-py-kvmagent`` (enabled, ``Restart=always``, logs to journald) where
   systemd runs, else a ``setsid`` daemon with a pid file; restarted when the config or its certificate
   changed or it is not running. Then wait for ``/readyz`` (over HTTPS, verified against the CA); if it does
   not answer, the unit's ``systemctl is-active`` state and its last journal lines go into the error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shlex
import shutil
import ssl
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import asyncssh
import yaml

from controller import sealed, sshkeys
from controller.agenturl import agent_url
from controller.compute import agenttls
from controller.core import Controller
from controller.errors import ApiError, InvalidArgument, OperationError
from controller.version import VERSION
from zsutil.runner import run

log = logging.getLogger(__name__)

VENV = "/opt/zstack-py/venv"
AGENT_BIN = f"{VENV}/bin/zstack-kvmagent"
CONFIG = "/etc/zstack-py/kvmagent.yaml"
STATE = "/var/lib/zstack-py"
STAMP = f"{STATE}/agent.stamp"
PIDFILE = f"{STATE}/kvmagent.pid"
UNIT = "zstack-py-kvmagent"
ROOT = Path(__file__).resolve().parents[2]
# Restart=always: a killed or crashed agent comes back within RestartSec (its VMs keep running: they are
# libvirt's, not the agent's). KillMode=process: stopping or restarting the unit must not take the flat
# network's dnsmasq and metadata servers (forked into namespaces) down with the agent. LimitNOFILE: every
# guest's metadata connection and every VM console is a descriptor. stdout/stderr go to journald.
UNIT_TEXT = f"""[Unit]
Description=ZStack-Py KVM agent
After=network-online.target libvirtd.service
Wants=libvirtd.service
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart={AGENT_BIN} --config {CONFIG}
Restart=always
RestartSec=1
KillMode=process
LimitNOFILE=65536
StandardOutput=journal
StandardError=journal
SyslogIdentifier=zstack-py-kvmagent
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=multi-user.target
"""


AGENT_PACKAGES = ("kvmagent", "storage", "flatnet", "zsutil")
WHEEL_PACKAGES = ("controller", "kvmagent", "flatnet", "storage", "vrouter", "zsutil")  # release.SOURCE_PACKAGES
# Run on the host with the venv's python: the same digest as agent_digest() over the INSTALLED modules.
REMOTE_DIGEST = """import hashlib, importlib.util, pathlib
h = hashlib.sha256()
for pkg in ("kvmagent", "storage", "flatnet", "zsutil"):
    spec = importlib.util.find_spec(pkg)
    d = pathlib.Path(spec.origin).parent
    for f in sorted(d.rglob("*.py")):
        h.update(str(f.relative_to(d.parent)).encode())
        h.update(f.read_bytes())
print(h.hexdigest())
"""


def agent_digest(root: Path = ROOT) -> str:
    """sha256 over the sources the agent runs (kvmagent, storage, flatnet, zsutil)."""
    h = hashlib.sha256()
    for pkg in AGENT_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def local_stamp() -> str:
    """Package version + sha256 over the sources the agent runs (kvmagent, storage, flatnet, zsutil)."""
    return f"{VERSION}:{agent_digest()}"


def package_digest(root: Path = ROOT) -> str:
    """sha256 over everything a wheel of this package is built from (all packages' files and pyproject.toml):
    the key of the wheel cache, read fresh each time (the sources may change while the controller runs)."""
    h = hashlib.sha256()
    files = [root / "pyproject.toml"]
    for pkg in WHEEL_PACKAGES:
        files += [f for f in (root / pkg).rglob("*")
                  if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo")]
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


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


def _find_wheel(out: Path) -> Path | None:
    wheels = sorted(out.glob(f"zstack_py-{VERSION}-*.whl")) if out.is_dir() else []
    return wheels[-1] if wheels else None


async def build_wheel(core: Controller, root: Path = ROOT) -> Path:
    """The wheel of this package, cached in ``agent_package_dir/<package digest>/``: built once per distinct
    source tree, never reused for other code with the same version. Built into a temporary directory and
    renamed into place, and kept only if the sources did not change during the build. A controller installed
    as a release serves the wheel it was installed from."""
    if not (root / "pyproject.toml").is_file():
        # A release install (controller.release): no source tree, the wheel this release was installed from.
        from controller.release import shipped_wheel

        shipped = shipped_wheel(VERSION)
        if shipped is None:
            raise OperationError(f"no agent package: {root} is not a source tree and no wheel of release "
                                 f"{VERSION} was installed with this controller (<release>/wheel/)")
        return shipped
    base = Path(core.config.agent_package_dir)
    if True:  # concurrent builders each build into their own temporary dir; the first rename wins
        for _ in range(3):
            digest = await asyncio.to_thread(package_digest, root)
            out = base / digest[:32]
            wheel = await asyncio.to_thread(_find_wheel, out)
            if wheel is not None:
                return wheel
            await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
            tmp = base / f".build-{digest[:32]}-{uuid4().hex[:8]}"
            try:
                from controller.release import source_copy

                src = await asyncio.to_thread(source_copy, root, tmp.with_name(tmp.name + "-src"))
                await run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp), str(src)],
                          timeout=600)
                built = await asyncio.to_thread(_find_wheel, tmp)
                if built is None:
                    raise OperationError(f"pip wheel did not produce zstack_py-{VERSION}-*.whl in {tmp}")
                if await asyncio.to_thread(package_digest, root) != digest:
                    log.warning("the package sources changed while the agent wheel was built; building again")
                    continue
                await asyncio.to_thread(_publish, tmp, out)
            finally:
                await asyncio.to_thread(shutil.rmtree, tmp, True)
                await asyncio.to_thread(shutil.rmtree, tmp.with_name(tmp.name + "-src"), True)
            wheel = await asyncio.to_thread(_find_wheel, out)
            if wheel is not None:
                return wheel
        raise OperationError(f"could not build a stable wheel of {root}: its sources kept changing")


KEEP_WHEELS = 8  # wheels of the most recent source trees kept in agent_package_dir


def _publish(tmp: Path, out: Path) -> None:
    try:
        os.rename(tmp, out)
    except OSError:
        if _find_wheel(out) is None:  # not a concurrent builder's identical result
            raise
    cached = sorted((d for d in out.parent.iterdir() if d.is_dir() and not d.name.startswith(".")),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for old in cached[KEEP_WHEELS:]:
        shutil.rmtree(old, ignore_errors=True)


async def _install(core: Controller, conn: asyncssh.SSHClientConnection) -> None:
    probe = f"test -x {AGENT_BIN} && {VENV}/bin/python -c {shlex.quote(REMOTE_DIGEST)} 2>/dev/null"
    have = (await _sh(conn, probe, check=False)).strip()
    if have == agent_digest():
        log.info("agent %s with these sources already installed in %s; reusing it", VERSION, VENV)
        return
    wheel = await build_wheel(core)
    await _sh(conn, f"mkdir -p {STATE}/packages")
    async with conn.start_sftp_client() as sftp:
        await sftp.put(str(wheel), f"{STATE}/packages/{wheel.name}")
    await _sh(conn, f"test -x {VENV}/bin/pip || python3 -m venv {VENV}")
    remote = f"{STATE}/packages/{shlex.quote(wheel.name)}"
    await _sh(conn, f"{VENV}/bin/pip install --upgrade {remote}")
    have = (await _sh(conn, probe, check=False)).strip()
    if have != agent_digest():
        # The same version was installed from other sources (pip keeps it): replace the package itself, unless
        # it is a development (editable) install, which is someone's checkout, not ours to replace.
        editable = f"ls {VENV}/lib/python3*/site-packages/__editable__*zstack_py* >/dev/null 2>&1 && echo yes"
        if (await _sh(conn, editable, check=False)).strip() == "yes":
            raise OperationError(f"the host's {VENV} is a development (editable) install of other agent sources "
                                 f"(digest {have[:12] or 'unknown'}, the controller's {agent_digest()[:12]}); "
                                 "it is not replaced: update that checkout or remove the venv")
        log.info("the host's agent sources differ from release %s's (same version); reinstalling it", VERSION)
        await _sh(conn, f"{VENV}/bin/pip install --force-reinstall --no-deps {remote}")
        have = (await _sh(conn, probe, check=False)).strip()
        if have != agent_digest():
            raise OperationError(f"after installing {wheel.name} in {VENV} on the host its agent sources have digest "
                                 f"{have[:12] or 'unknown'}, not {agent_digest()[:12]}")


def agent_config(host: dict[str, Any], controller_url: str, listen_ip: str, *, tls: bool = False) -> str:
    data = {"host_uuid": host["uuid"], "token": host["agentToken"],
            "controller_url": controller_url, "listen_ip": listen_ip,
            "port": host["agentPort"], "libvirt_uri": "qemu:///system", "domain_type": "auto",
            "state_dir": STATE, "log_dir": "/var/log/zstack-py"}
    if tls:
        data.update({"tls_cert": agenttls.CERT, "tls_key": agenttls.KEY, "tls_ca": agenttls.CA})
    return yaml.safe_dump(data, sort_keys=True)


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


async def wait_ready(host: dict[str, Any], timeout: float = 60.0, *, tls: ssl.SSLContext | bool = True) -> None:
    """Until the agent's ``/readyz`` answers 200 (started and reconciled); ``tls``: the CA-pinned context of
    a TLS agent (``host['agentTls']``)."""
    url = agent_url(host) + "/readyz"
    headers = {"Authorization": f"Bearer {host['agentToken']}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = ""
    async with aiohttp.ClientSession(trust_env=False) as s:
        while True:
            try:
                async with s.get(url, headers=headers, ssl=tls, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except aiohttp.ClientConnectorCertificateError as e:
                last = f"certificate refused: {e.certificate_error}"
            except (aiohttp.ClientError, TimeoutError) as e:
                last = type(e).__name__
            if loop.time() > deadline:
                raise OperationError(f"the agent on host {host['managementIp']} did not answer {url} within "
                                     f"{timeout:.0f} s (last: {last or 'no answer'}); see `journalctl -u {UNIT}` "
                                     "(systemd) or /var/log/zstack-py/kvmagent.out on the host")
            await asyncio.sleep(0.2)


async def agent_unit_state(core: Controller, host: dict[str, Any], *, journal_lines: int = 0,
                           timeout: float = 20.0) -> str:
    """What the host's init says about the agent, over SSH: ``systemctl is-active zstack-py-kvmagent`` (and the
    unit's last journal lines) where systemd runs, else whether the daemon's pid file names a live agent.
    Never raises: an unreachable host is described as such."""

    async def probe() -> str:
        async with await _login(core, host) as conn:
            systemd = (await _sh(conn, "test -d /run/systemd/system && echo yes", check=False)).strip() == "yes"
            if not systemd:
                alive = (await _sh(conn, f"{agent_alive_sh(PIDFILE)} && echo yes", check=False)).strip()
                text = f"no systemd; agent daemon {'running' if alive == 'yes' else 'not running'}"
            else:
                active = (await _sh(conn, f"systemctl is-active {UNIT}", check=False)).strip() or "unknown"
                text = f"systemctl is-active {UNIT}: {active}"
                if journal_lines:
                    tail = await _sh(conn, f"journalctl -u {UNIT} -n {int(journal_lines)} --no-pager -o cat",
                                     check=False)
                    text += f"; last journal lines: {tail.strip()[-2000:]}"
        return text

    try:
        return await asyncio.wait_for(probe(), timeout)
    except (ApiError, OSError, asyncssh.Error, TimeoutError) as e:
        return f"cannot ask the host's init over SSH: {type(e).__name__}: {getattr(e, 'details', e)}"


def local_digest() -> str:
    """The digest of the agent sources this controller deploys (what an up-to-date agent reports)."""
    return local_stamp().split(":", 1)[1]


async def deploy(core: Controller, host: dict[str, Any], *, new: bool, accept: str | None = None,
                 force: bool = False) -> str:
    """Make sure the current agent runs on ``host`` with the right config; returns the controller URL
    written into it (the connect sequence records it in ``HostAgent``). ``force``: the running agent reported
    another release or digest than this controller's: install (unless the installed sources already are
    this controller's) and restart it whatever the host's stamp says."""
    tls = bool(core.config.agent_tls)
    async with await _login(core, host, accept) as conn:
        local_ip = conn.get_extra_info("sockname")[0]
        peer_ip = conn.get_extra_info("peername")[0]
        if tls:
            url = await agenttls.events_url(core, local_ip)
        else:
            url = core.config.public_url or f"http://{local_ip}:{core.config.port}"
        stamp = (await _sh(conn, f"cat {STAMP}", check=False)).strip()
        outdated = force or stamp != local_stamp()
        if outdated:
            await _install(core, conn)
            await _sh(conn, f"mkdir -p {STATE} && cat > {STAMP}", stdin=local_stamp() + "\n")
        certs_changed = tls and await agenttls.ensure_agent_cert(core, conn, host, peer_ip)
        text = agent_config(host, url, peer_ip, tls=tls)
        old = await _sh(conn, f"cat {CONFIG}", check=False)
        changed = old != text
        if changed:
            await _sh(conn, f"mkdir -p /etc/zstack-py && umask 077 && cat > {CONFIG}", stdin=text)
        await _start_agent(conn, restart=changed or certs_changed or outdated)
    ready = {**host, "agentTls": int(tls)}
    try:
        await wait_ready(ready, tls=core.services["tls"].agent_ssl if tls else True)
    except OperationError as e:
        state = await agent_unit_state(core, host, journal_lines=15)
        raise OperationError(f"{e.details}; on the host: {state}") from e
    if bool(host.get("agentTls")) != tls:
        async with core.db.write() as tx:
            await tx.update("Host", {"uuid": host["uuid"]}, {"agentTls": int(tls)})
    log.info("agent deployed on %s (new=%s, config changed=%s, tls=%s, certificate issued=%s)",
             host["managementIp"], new, changed, tls, certs_changed)
    return url
