"""Shared pieces of ``scripts/testbed``: configuration, the state file, commands and the dependency check.

Standard library only: the testbed must run with Debian's ``/usr/bin/python3`` before the project venv exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/zstack-py-testbed"
SSH_USER = "root"
# Root's password inside the simulated hosts only (a private /etc/shadow is bind-mounted there).
SSH_PASSWORD = "zstack-testbed"
BRIDGE = "br_eth0"
PHYS_BRIDGE = "br_phys"
MAX_HOSTS = 20
MODES = ("plain", "nspawn")
TESTBED_SCRIPT = Path(__file__).resolve().parent.parent / "testbed"

# Directory inside a host -> name of its private copy under the host's state dir (bind mounts).
PRIVATE_DIRS = {
    "/etc/libvirt": "etc-libvirt",
    "/run/libvirt": "run-libvirt",
    "/var/lib/libvirt": "lib-libvirt",
    "/var/log/libvirt": "log-libvirt",
    "/var/cache/libvirt": "cache-libvirt",
    "/run/netns": "netns",
    "/var/lib/zstack-py": "lib-zstack-py",
    "/etc/zstack-py": "etc-zstack-py",
    "/var/log/zstack-py": "log-zstack-py",
    "/root/.ssh": "root-ssh",
}

# (command, Debian package that provides it)
DEPENDENCIES = [
    ("libvirtd", "libvirt-daemon"),
    ("virsh", "libvirt-clients"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("sshd", "openssh-server"),
    ("ssh-keygen", "openssh-client"),
    ("ebtables", "ebtables"),
    ("ip", "iproute2"),
    ("bridge", "iproute2"),
    ("dnsmasq", "dnsmasq-base"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("mount", "mount"),
]
QEMU_DRIVER = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"


class TestbedError(Exception):
    """A testbed operation failed; the message says what and how to fix it."""


@dataclass(frozen=True)
class Config:
    """What ``up`` was asked for. Every name and address of the testbed is derived here and only here."""

    state_dir: str
    hosts: int = 2
    prefix: str = "tb"
    mgmt_net: str = "10.99.0"
    # plain: namespaces with libvirtd/sshd as plain daemons; nspawn: each host boots systemd (tb_nspawn.py)
    mode: str = "plain"
    # nspawn mode: directories of this machine bind-mounted at the same path into every host (what an NFS
    # export is to real hosts: e.g. the directory of file:// images); read-only, or read-write with ":rw"
    shares: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.mode not in MODES:
            raise TestbedError(f"mode: {self.mode!r} is invalid; allowed: {', '.join(MODES)}")
        if not 1 <= self.hosts <= MAX_HOSTS:
            raise TestbedError(f"hosts: {self.hosts} is out of range; allowed 1..{MAX_HOSTS}")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,4}", self.prefix):
            raise TestbedError(f"prefix: {self.prefix!r} is invalid; allowed 1-5 chars [a-z0-9], "
                               "first a letter")
        octets = self.mgmt_net.split(".")
        if len(octets) != 3 or not all(o.isdigit() and 0 <= int(o) <= 255 for o in octets):
            raise TestbedError(f"mgmt-net: {self.mgmt_net!r} is invalid; allowed three octets like 10.99.0")
        for share in self.shares:
            path = share.removesuffix(":rw")
            if not os.path.isabs(path) or not os.path.isdir(path) or ":" in path:
                raise TestbedError(f"share: {share!r} must be an existing directory's absolute path without ':' "
                                   "(+ ':rw' for read-write)")
        if self.shares and self.mode != "nspawn":
            raise TestbedError("share: only --mode nspawn hosts have a file system of their own to share into")
        if not os.path.isabs(self.state_dir):
            raise TestbedError(f"state-dir: {self.state_dir!r} must be an absolute path")

    @property
    def root(self) -> Path:
        return Path(self.state_dir)

    @property
    def host_names(self) -> list[str]:
        return [f"h{i}" for i in range(1, self.hosts + 1)]

    def host_ip(self, host: str) -> str:
        return f"{self.mgmt_net}.{10 + int(host[1:])}"

    @property
    def mgmt_ip(self) -> str:
        return f"{self.mgmt_net}.1"

    @property
    def phys_ns(self) -> str:
        return f"{self.prefix}-phys"

    @property
    def mgmt_link(self) -> str:
        return f"{self.prefix}-mgmt"

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def uplink(self, host: str) -> str:
        """Root-side name of the host's eth0 veth (it lives in the phys namespace)."""
        return f"{self.prefix}-{host}-p"

    @property
    def nsf_dir(self) -> Path:
        return self.root / "nsf"

    def mnt_handle(self, host: str) -> Path:
        return self.nsf_dir / f"{host}.mnt"

    def uts_handle(self, host: str) -> Path:
        return self.nsf_dir / f"{host}.uts"

    def hostname(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def host_dir(self, host: str) -> Path:
        return self.root / host

    def libvirt_socket(self, host: str) -> Path:
        return self.host_dir(host) / PRIVATE_DIRS["/run/libvirt"] / "libvirt-sock"

    def nsenter(self, host: str) -> list[str]:
        """Command prefix that runs a command inside the host (its mount, network and UTS namespace; in nspawn
        mode every namespace of the container, found at run time so the prefix survives a reboot)."""
        if self.mode == "nspawn":
            return [str(TESTBED_SCRIPT), "--state-dir", self.state_dir, "exec", host]
        return ["nsenter", f"--mount={self.mnt_handle(host)}", f"--net=/run/netns/{self.netns(host)}",
                f"--uts={self.uts_handle(host)}"]


@dataclass
class State:
    """The state file: written before anything is created, so ``down`` can undo a crashed ``up``."""

    config: Config
    phase: str = "building"  # building -> up
    # Things that existed before and must survive, or did not and must go.
    created_dirs: list[str] = field(default_factory=list)
    mounted_run_netns: bool = False

    @staticmethod
    def path(state_dir: str) -> Path:
        return Path(state_dir) / "state.json"

    def save(self) -> None:
        p = self.path(self.config.state_dir)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, p)

    @classmethod
    def load(cls, state_dir: str) -> State | None:
        p = cls.path(state_dir)
        if not p.exists():
            return None
        raw = json.loads(p.read_text())
        raw["config"]["shares"] = tuple(raw["config"].get("shares", ()))
        raw["config"] = Config(**raw["config"])
        return cls(**raw)


def sh(
    *argv: str, check: bool = True, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run argv (no shell) and capture its output; on failure raise TestbedError carrying argv, rc, stderr."""
    try:
        cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"command timed out after {timeout}s: {list(argv)}") from e
    if check and cp.returncode != 0:
        raise TestbedError(f"command failed (rc={cp.returncode}): {list(argv)}: {cp.stderr.strip()}")
    return cp


def is_mountpoint(path: str | Path) -> bool:
    """True if ``path`` is a mount point in the root mount namespace (as seen in /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    return any(mount_points_under(target, exact=True))


def mount_points_under(prefix: str | Path, exact: bool = False) -> list[str]:
    """Mount points (in this process's mount namespace) equal to or below ``prefix``."""
    prefix = str(prefix).rstrip("/") or "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == prefix or (not exact and mp.startswith(prefix + "/")):
                found.append(mp)
    return found


def check_dependencies() -> None:
    """Raise TestbedError naming every missing Debian package (the installer installs them)."""
    missing = sorted({pkg for cmd, pkg in DEPENDENCIES if not _which(cmd)})
    if not os.path.exists(QEMU_DRIVER):
        missing.append("libvirt-daemon-driver-qemu")
    problems = []
    if missing:
        names = " ".join(missing)
        problems.append(f"missing packages: {names} (apt-get install -y {names})")
    if sh("getent", "passwd", "libvirt-qemu", check=False).returncode != 0:
        problems.append("missing user libvirt-qemu (libvirtd's QEMU driver refuses to start without it): "
                        "groupadd -r kvm; groupadd -r libvirt-qemu; "
                        "useradd -r -g libvirt-qemu -G kvm libvirt-qemu, "
                        "or install libvirt-daemon-system")
    if os.geteuid() != 0:
        problems.append("the testbed needs root")
    if problems:
        raise TestbedError("; ".join(problems))


def _which(cmd: str) -> str | None:
    return shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin")


def check_names_free(cfg: Config) -> None:
    """Refuse to start if a namespace, link or address the testbed would create exists already: ``down``
    removes by name, so it must never meet a name that belongs to someone else."""
    taken = [f"netns {n}" for n in [cfg.phys_ns, *(cfg.netns(h) for h in cfg.host_names)]
             if os.path.exists(f"/run/netns/{n}")]
    if os.path.exists(f"/sys/class/net/{cfg.mgmt_link}"):
        taken.append(f"link {cfg.mgmt_link}")
    addrs = sh("ip", "-o", "-4", "addr", "show").stdout
    if re.search(rf"inet {re.escape(cfg.mgmt_net)}\.\d+/", addrs):
        taken.append(f"an address in {cfg.mgmt_net}.0/24 on this machine")
    if taken:
        raise TestbedError(f"cannot bring the testbed up in {cfg.state_dir}: already in use: {', '.join(taken)}; "
                           "another testbed may be up (use --prefix/--mgmt-net or `down` it with its --state-dir)")
