"""Testbed hosts that boot a real systemd (``testbed up --mode nspawn``).

Each host is a ``systemd-nspawn --boot`` container joined to the host's network namespace that ``tb_up`` made
(tb-phys, the veth, ``br_eth0`` with its pinned MAC: unchanged). Its root is an overlay: the shared Debian tree
of ``tb_rootfs`` below, the host's own upper layer above (hostname, machine-id, SSH host key, root password,
authorized_keys, libvirt config, and whatever the host writes later: the agent's venv, its state, guests'
disks). sshd, libvirtd, virtlogd run as Debian's units; the agent is installed by AddKvmHost as the unit
``zstack-py-kvmagent``.

No systemd runs on this machine, so nspawn runs with ``--register=no --keep-unit`` in cgroups of its own
(name=systemd and the unified hierarchy) that ``down`` removes, with the payload/ and supervisor/ groups nspawn
creates below them. /run/libvirt of a host is bind-mounted from ``<host dir>/run-libvirt`` so the root namespace
reaches its libvirtd by socket, as in plain mode.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
import warnings
from pathlib import Path

from tb_common import SSH_PASSWORD, Config, TestbedError, is_mountpoint, mount_points_under, sh

BOOT_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_HIERARCHIES = ("systemd", "unified")
CAPABILITIES = "CAP_NET_ADMIN,CAP_IPC_LOCK,CAP_SYS_RESOURCE"


def machine(cfg: Config, host: str) -> str:
    return cfg.hostname(host)


def root_dir(cfg: Config, host: str) -> Path:
    return cfg.host_dir(host) / "root"


def cgroup_dirs(cfg: Config, host: str) -> list[Path]:
    name = f"zstack-testbed-{machine(cfg, host)}"
    return [CGROUP_ROOT / h / name for h in CGROUP_HIERARCHIES if (CGROUP_ROOT / h / "cgroup.procs").exists()]


def nspawn_pid(cfg: Config, host: str) -> int | None:
    """The pid of the host's systemd-nspawn if it runs (checked by its command line: the pid file may be stale)."""
    try:
        pid = int((cfg.host_dir(host) / "nspawn.pid").read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except (OSError, ValueError):
        return None
    if not args[0].endswith(b"systemd-nspawn") or f"--machine={machine(cfg, host)}".encode() not in args:
        return None
    return pid


def leader_pid(cfg: Config, host: str) -> int | None:
    """The container's PID 1 (systemd), a child of nspawn."""
    pid = nspawn_pid(cfg, host)
    if pid is None:
        return None
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
            except OSError:
                continue
    return None


def nsenter_pid(pid: int) -> list[str]:
    return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w"]


def system_state(cfg: Config, host: str) -> str:
    """What ``systemctl is-system-running`` says inside the host ("down" when the container does not run)."""
    pid = leader_pid(cfg, host)
    if pid is None:
        return "down"
    cp = sh(*nsenter_pid(pid), "systemctl", "is-system-running", check=False, timeout=10)
    return cp.stdout.strip() or f"unknown (rc={cp.returncode})"


def units_active(cfg: Config, host: str, units: tuple[str, ...]) -> bool:
    pid = leader_pid(cfg, host)
    if pid is None:
        return False
    return sh(*nsenter_pid(pid), "systemctl", "is-active", "-q", *units, check=False, timeout=10).returncode == 0


def prepare(cfg: Config, host: str, lower: Path, authorized_key: str) -> None:
    """Mount the host's overlay root and write its own files into the upper layer (first boot only for the
    identity: a rebooted or re-upped host keeps its machine-id and SSH host key)."""
    d = cfg.host_dir(host)
    for sub in ("upper", "work", "root", "run-libvirt"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    root = root_dir(cfg, host)
    if not is_mountpoint(root):
        sh("mount", "-t", "overlay", f"zstack-testbed-{machine(cfg, host)}", "-o",
           f"lowerdir={lower},upperdir={d / 'upper'},workdir={d / 'work'}", str(root))
    name, ip = cfg.hostname(host), cfg.host_ip(host)
    (root / "etc/hostname").write_text(name + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n{ip} {name}\n::1 localhost ip6-localhost\n")
    if not (root / "etc/machine-id").read_text().strip():
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    if not (root / "etc/ssh/ssh_host_ed25519_key").exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
           "-f", str(root / "etc/ssh/ssh_host_ed25519_key"))
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "etc/ssh/sshd_config.d/zstack-testbed.conf").write_text(
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin yes\nPasswordAuthentication yes\n"
        "KbdInteractiveAuthentication no\nUseDNS no\nPrintMotd no\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(authorized_key)
    _set_root_password(root / "etc/shadow")
    host_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"zstack-testbed:{cfg.state_dir}:{host}")
    # Socket activation (libvirtd-tcp.socket) replaces listen_tcp/listen_addr.
    (root / "etc/libvirt/libvirtd.conf").write_text(
        f'host_uuid = "{host_uuid}"\nauth_tcp = "none"\nauth_unix_rw = "none"\n'
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
    # nspawn mounts the v1 cgroup controllers read-only: libvirt must not try to create groups in them. With
    # cgroup_controllers empty it still creates a machine group and then refuses <cputune> ("CPU tuning is not
    # available on this host"); behind an empty /sys/fs/cgroup it finds no group to make (ENOENT, which it
    # ignores) and starts guests without one, as in plain mode. systemd still tracks libvirtd and its guests.
    dropin = root / "etc/systemd/system/libvirtd.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "zstack-testbed.conf").write_text("[Service]\nTemporaryFileSystem=/sys/fs/cgroup\n")
    (root / "etc/libvirt/qemu.conf").write_text(
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\nsecurity_driver = "none"\n'
        f'cgroup_controllers = [ ]\nnamespaces = [ ]\nmigration_host = "{ip}"\n')


def _set_root_password(shadow: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # stdlib until 3.13; the testbed runs on Debian 12's 3.11

        hashed = crypt.crypt(SSH_PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    lines = []
    for line in shadow.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "root":
            fields[1] = hashed
        lines.append(":".join(fields))
    shadow.write_text("\n".join(lines) + "\n")
    shadow.chmod(0o640)


def boot(cfg: Config, host: str) -> int:
    """Start the container (detached, in its own session and cgroups); returns nspawn's pid."""
    d = cfg.host_dir(host)
    groups = cgroup_dirs(cfg, host)
    for g in groups:
        g.mkdir(exist_ok=True)
    # /run of a host is a tmpfs: a boot starts with an empty /run/libvirt, as after a real reboot.
    run_libvirt = d / "run-libvirt"
    if run_libvirt.exists():
        for entry in run_libvirt.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    argv = ["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit", f"--machine={machine(cfg, host)}",
            f"--directory={root_dir(cfg, host)}", f"--hostname={cfg.hostname(host)}", "--private-network",
            f"--network-namespace-path=/run/netns/{cfg.netns(host)}", f"--capability={CAPABILITIES}",
            "--link-journal=no", "--console=pipe", "--resolv-conf=off", "--timezone=off",
            f"--bind={run_libvirt}:/run/libvirt"]
    argv += [f"--bind={share.removesuffix(':rw')}" if share.endswith(":rw") else f"--bind-ro={share}"
             for share in cfg.shares]
    if os.path.exists("/dev/kvm"):
        argv.append("--bind=/dev/kvm")

    def enter_cgroups() -> None:
        for g in groups:
            (g / "cgroup.procs").write_text(str(os.getpid()))

    with open(d / "console.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                preexec_fn=enter_cgroups, close_fds=True)
    (d / "nspawn.pid").write_text(f"{proc.pid}\n")
    (d / "boot.t0").write_text(f"{time.time()}\n")
    return proc.pid


def wait_booted(cfg: Config, host: str, timeout: float = BOOT_TIMEOUT) -> float:
    """Wait until systemd inside says running (or degraded: reported by status) and sshd and libvirtd's sockets
    are active; returns the seconds since boot()."""
    d = cfg.host_dir(host)
    t0 = float((d / "boot.t0").read_text())
    deadline = time.monotonic() + timeout
    state = "down"
    while time.monotonic() < deadline:
        if nspawn_pid(cfg, host) is None:
            tail = (d / "console.log").read_text(errors="replace")[-2000:]
            raise TestbedError(f"host {host}: systemd-nspawn exited during boot; console:\n{tail}")
        state = system_state(cfg, host)
        if state in ("running", "degraded") and units_active(cfg, host, ("ssh.service", "libvirtd.socket")):
            return time.time() - t0
        time.sleep(0.05)
    raise TestbedError(f"host {host}: systemd did not finish booting within {timeout:.0f} s (state {state}); "
                       f"see {d / 'console.log'} and `scripts/testbed exec {host} systemctl --failed`")


def _cgroup_pids(cfg: Config, host: str) -> set[int]:
    pids: set[int] = set()
    for g in cgroup_dirs(cfg, host):
        for procs in g.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return pids


def stop(cfg: Config, host: str, timeout: float = STOP_TIMEOUT) -> None:
    """Power the container off (SIGTERM to nspawn: systemd inside shuts down), SIGKILL what is left after
    ``timeout``; then remove nspawn's cgroups and its leftovers in /run/systemd/nspawn. The overlay stays."""
    pid = nspawn_pid(cfg, host)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while nspawn_pid(cfg, host) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    _kill_cgroups(cfg, host)
    _reap_pidfile(cfg.host_dir(host) / "nspawn.pid")
    for g in cgroup_dirs(cfg, host):
        _rmdir_tree(g)
    _remove_nspawn_leftovers(cfg, host)


def _kill_cgroups(cfg: Config, host: str) -> None:
    for _ in range(3):
        left = _cgroup_pids(cfg, host)
        if not left:
            return
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def _remove_nspawn_leftovers(cfg: Config, host: str) -> None:
    """/run is on disk here: nspawn leaves /run/systemd/nspawn/{propagate/<machine>,locks/*} behind."""
    name = machine(cfg, host)
    shutil.rmtree(Path("/run/systemd/nspawn/propagate") / name, ignore_errors=True)
    locks = Path("/run/systemd/nspawn/locks")
    root_key = str(root_dir(cfg, host)).replace("/", "-").strip("-")
    if locks.is_dir():
        for lock in locks.iterdir():
            if name in lock.name or root_key in lock.name:
                lock.unlink(missing_ok=True)
    for d in ("/run/systemd/nspawn/locks", "/run/systemd/nspawn/propagate", "/run/systemd/nspawn"):
        try:
            os.rmdir(d)
        except OSError:
            pass


def _reap_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text())
        os.waitpid(pid, os.WNOHANG)
    except (OSError, ValueError, ChildProcessError):
        pass


def _rmdir_tree(path: Path) -> None:
    if not path.exists():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            os.rmdir(sub)
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def unmount(cfg: Config, host: str) -> None:
    """Unmount the overlay root (and anything left mounted below it), deepest first."""
    root = root_dir(cfg, host)
    for mp in sorted(mount_points_under(root), key=len, reverse=True):
        sh("umount", "-l", mp, check=False)


def cleanup_problems(cfg: Config, host: str) -> list[str]:
    problems = [f"cgroup {g} still exists" for g in cgroup_dirs(cfg, host) if g.exists()]
    problems += [f"nspawn leftover {p}" for p in (Path("/run/systemd/nspawn/propagate") / machine(cfg, host),)
                 if p.exists()]
    return problems


def pss_kib(pids: set[int]) -> int:
    """Proportional set size of ``pids`` in KiB (memory of a host, without a memory cgroup to ask)."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def host_pss_kib(cfg: Config, host: str) -> int:
    return pss_kib(_cgroup_pids(cfg, host))


def cgroup_pids(cfg: Config, host: str) -> set[int]:
    return _cgroup_pids(cfg, host)


def check_dependencies() -> None:
    missing = [pkg for tool, pkg in (("systemd-nspawn", "systemd-container"), ("mmdebstrap", "mmdebstrap"))
               if shutil.which(tool) is None]
    if missing:
        raise TestbedError(f"--mode nspawn needs packages {' '.join(missing)} "
                           f"(apt-get install -y {' '.join(missing)}; scripts/install.sh installs them)")
    if not (CGROUP_ROOT / "systemd" / "cgroup.procs").exists() and not (CGROUP_ROOT / "cgroup.procs").exists():
        raise TestbedError("--mode nspawn needs a name=systemd or unified cgroup hierarchy under /sys/fs/cgroup")
    if not is_mountpoint(CGROUP_ROOT / "systemd") and not (CGROUP_ROOT / "unified").exists():
        raise TestbedError("--mode nspawn: no writable cgroup hierarchy for systemd-nspawn")
