"""The Debian root tree that every systemd-nspawn testbed host boots (``testbed up --mode nspawn``).

Built once with ``mmdebstrap`` from the mirrors apt uses on this machine, with libvirt and QEMU pinned to the
versions installed here, and cached under ``ROOTFS_CACHE`` keyed by a digest of everything that goes into it
(package set with versions, the agent's Python dependencies, this builder's settings). Hosts mount it read-only
as the lower layer of an overlay; their own files go into the upper layer.

The agent gets into a host the way it gets onto a real one: AddKvmHost uploads a wheel of the project over SSH
and ``pip install``s it into ``/opt/zstack-py/venv``. So the tree has that venv already, holding the agent's
dependencies installed from a wheelhouse built here (``pip wheel`` with the versions of this machine's venv;
libvirt-python is compiled once, against the same libvirt); the wheelhouse stays in the tree and
``/etc/pip.conf`` points pip at it (``find-links``), so the agent's install needs no network and a new
dependency still comes from PyPI. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

from tb_common import TestbedError, sh

ROOTFS_CACHE = Path(os.environ.get("ZSTACK_TESTBED_ROOTFS_CACHE", "/var/cache/zstack-py-testbed"))
REPO = Path(__file__).resolve().parents[2]
SHARED_VENV = Path("/opt/zstack-py/venv")
HOST_VENV = "/opt/zstack-py/venv"
WHEELHOUSE = "/var/cache/zstack-py/wheelhouse"  # inside the tree
SUITE = "bookworm"
# Pinned to this machine's version (the guests must behave the same inside and outside a host).
PINNED = ["libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-daemon-system", "libvirt-clients", "libvirt0",
          "qemu-system-x86", "qemu-utils", "qemu-system-common", "qemu-system-data", "qemu-block-extra",
          "dnsmasq-base", "ebtables", "nftables", "openssh-server", "openssh-client", "python3"]
PACKAGES = ["systemd", "systemd-sysv", "dbus", "libpam-systemd", "openssh-server", "openssh-client", "iproute2",
            "iptables", "ebtables", "libvirt-daemon-system", "libvirt-daemon-driver-qemu", "libvirt-clients",
            "qemu-system-x86", "qemu-utils", "dnsmasq-base", "python3", "python3-venv", "procps", "psmisc",
            "kmod", "ca-certificates", "busybox",  # busybox: tests ping/wget/udhcpc from a host
            "nftables"]  # the agent's security-group applier loads its rule sets with nft
# Units a container host does not need (consoles, timers, services that wait for hardware). Not
# virtlockd.socket/virtlockd-admin.socket: libvirtd.service Requires= virtlockd.socket, and with it masked
# systemd refuses every `systemctl restart libvirtd` ("Unit virtlockd.socket is masked", exit 1), although the
# boot's socket-activated start went through. The socket only listens; qemu.conf uses no lock manager.
MASKED = ["console-getty.service", "getty@tty1.service", "apt-daily.timer", "apt-daily-upgrade.timer",
          "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer", "man-db.timer", "logrotate.timer",
          "systemd-tmpfiles-clean.timer", "systemd-networkd-wait-online.service", "libvirt-guests.service",
          "systemd-timesyncd.service", "ssh.socket"]
BUILDER_VERSION = "3"


def _installed_version(pkg: str) -> str | None:
    cp = sh("dpkg-query", "-W", "-f=${Status}\t${Version}", pkg, check=False)
    if cp.returncode != 0 or not cp.stdout.startswith("install ok installed"):
        return None
    return cp.stdout.split("\t", 1)[1].strip()


def _apt_candidate(pkg: str) -> str | None:
    out = sh("apt-cache", "policy", pkg, check=False).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    return m.group(1) if m and m.group(1) != "(none)" else None


def package_set() -> list[str]:
    """mmdebstrap --include items: every package, pinned ``pkg=version`` where this machine has it installed
    (else the version of the same source package, e.g. libvirt-daemon-system follows libvirt-daemon)."""
    pins: dict[str, str] = {}
    for pkg in PINNED:
        v = _installed_version(pkg)
        if v is None and pkg.startswith("libvirt"):
            v = _installed_version("libvirt-daemon")
        if v is None and pkg.startswith("qemu"):
            v = _installed_version("qemu-system-x86") or _installed_version("qemu-utils")
        if v is not None:
            pins[pkg] = v
    # qemu-system-data and qemu-block-extra may carry a binNMU-less version; take what apt offers for them.
    for pkg in ("qemu-system-data",):
        cand = _apt_candidate(pkg)
        if cand and pkg in pins and cand != pins[pkg] and pins[pkg].startswith(cand):
            pins[pkg] = cand
    pins.pop("qemu-block-extra", None)
    items = sorted(set(PACKAGES) | set(pins))
    return [f"{p}={pins[p]}" if p in pins else p for p in items]


def python_requirements() -> list[str]:
    """The project's runtime dependencies, pinned to the versions of this machine's venv where installed."""
    with open(REPO / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    names = [re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0] for d in deps]
    py = SHARED_VENV / "bin" / "python"
    versions: dict[str, str] = {}
    if py.exists():
        code = ("import importlib.metadata as m, json, sys\nout = {}\nfor n in sys.argv[1:]:\n"
                "    try: out[n] = m.version(n)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(out))")
        cp = sh(str(py), "-c", code, *names, check=False)
        if cp.returncode == 0:
            versions = json.loads(cp.stdout)
    return [f"{n}=={versions[n]}" if n in versions else d for n, d in zip(names, deps, strict=True)]


def mirror_lines() -> list[str]:
    """One-line ``deb URI SUITE COMPONENTS`` entries for the Debian suites apt uses here."""
    lines: list[str] = []
    paths = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for p in paths:
        if p.is_file() and p.suffix == ".sources":
            lines += _deb822_lines(p.read_text())
        elif p.is_file() and (p.name == "sources.list" or p.suffix == ".list"):
            for line in p.read_text().splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 4 and parts[0] == "deb" and not parts[1].startswith("[") \
                        and parts[2].startswith(SUITE):
                    lines.append(" ".join(parts))
    return lines or [f"deb http://deb.debian.org/debian {SUITE} main",
                     f"deb http://deb.debian.org/debian-security {SUITE}-security main"]


def _deb822_lines(text: str) -> list[str]:
    lines = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.lstrip().startswith("#"):
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        lines += [f"deb {uri} {suite} {fields.get('components', 'main')}" for uri in fields.get("uris", "").split()
                  for suite in fields.get("suites", "").split() if suite.startswith(SUITE)]
    return lines


def rootfs_key(packages: list[str], reqs: list[str], mirrors: list[str]) -> str:
    doc = json.dumps({"packages": packages, "python": reqs, "mirrors": mirrors, "masked": MASKED,
                      "builder": BUILDER_VERSION}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def ensure_rootfs(log: object = print) -> Path:
    """The cached root tree for the current package set; built (~1-2 min, once) when missing."""
    packages, reqs, mirrors = package_set(), python_requirements(), mirror_lines()
    key = rootfs_key(packages, reqs, mirrors)
    tree = ROOTFS_CACHE / f"rootfs-{key}"
    if (tree / ".zstack-testbed-complete").exists():
        os.utime(tree / ".zstack-testbed-complete")  # last used: see _prune
        return tree
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("systemd-nspawn", "systemd-container")):
        if shutil.which(tool) is None:
            raise TestbedError(f"missing package {pkg} (apt-get install -y {pkg}); needed by --mode nspawn")
    ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
    work = ROOTFS_CACHE / f"building-{key}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    t0 = time.monotonic()
    try:
        wheels = work / "wheelhouse"
        _build_wheelhouse(wheels, reqs)
        _mmdebstrap(work / "tree", packages, mirrors, wheels, reqs)
        (work / "tree" / ".zstack-testbed-complete").write_text(json.dumps(
            {"packages": packages, "python": reqs, "mirrors": mirrors}, indent=1) + "\n")
        shutil.rmtree(tree, ignore_errors=True)
        os.rename(work / "tree", tree)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"testbed: built the host root tree {tree} in {time.monotonic() - t0:.0f} s")  # type: ignore[operator]
    _prune(keep=tree)
    return tree


PRUNE_AFTER = 2 * 86400  # seconds a tree of another package set may stay unused before it is removed


def _prune(keep: Path) -> None:
    """Remove the trees of other package sets that no running host uses (no overlay has them as lower dir)
    and that nobody used for PRUNE_AFTER: checkouts of different versions on one machine (worktrees, CI
    branches) each keep their tree instead of rebuilding it in turn."""
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    for old in ROOTFS_CACHE.glob("rootfs-*"):
        if old == keep or f"lowerdir={old}" in mounts:
            continue
        try:
            idle = time.time() - (old / ".zstack-testbed-complete").stat().st_mtime
        except FileNotFoundError:
            idle = PRUNE_AFTER  # never completed
        if idle >= PRUNE_AFTER:
            shutil.rmtree(old, ignore_errors=True)


def _build_wheelhouse(out: Path, reqs: list[str]) -> None:
    pip = SHARED_VENV / "bin" / "pip"
    if not pip.exists():
        raise TestbedError(f"{pip} is missing; run scripts/install.sh first (it builds the host venv's wheels)")
    out.mkdir(parents=True)
    cp = subprocess.run([str(pip), "wheel", "-q", "-w", str(out), *reqs], capture_output=True, text=True,
                        timeout=900)
    if cp.returncode != 0:
        raise TestbedError(f"pip wheel of the agent's dependencies failed: {cp.stderr.strip()[-2000:]}")


def _mmdebstrap(tree: Path, packages: list[str], mirrors: list[str], wheels: Path, reqs: list[str]) -> None:
    venv_pip = f"{HOST_VENV}/bin/pip"
    hooks = [
        f'mkdir -p "$1{WHEELHOUSE}"',
        f'cp -a {wheels}/. "$1{WHEELHOUSE}/"',
        f'chroot "$1" python3 -m venv {HOST_VENV}',
        f'chroot "$1" {venv_pip} install -q --no-index --find-links {WHEELHOUSE} ' + " ".join(
            f"'{r}'" for r in reqs),
        f"printf '[global]\\nfind-links = {WHEELHOUSE}\\ndisable-pip-version-check = true\\n' > \"$1/etc/pip.conf\"",
        # libvirt: no idle timeout, TCP socket for migration and qemu+tcp://, guests destroyed on shutdown.
        "printf 'LIBVIRTD_ARGS=\"\"\\n' > \"$1/etc/default/libvirtd\"",
        "printf 'ON_SHUTDOWN=destroy\\nON_BOOT=ignore\\n' > \"$1/etc/default/libvirt-guests\"",
        'chroot "$1" systemctl enable libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket '
        "libvirtd-tcp.socket virtlogd.socket ssh.service",
        'chroot "$1" systemctl mask ' + " ".join(MASKED),
        'rm -f "$1"/etc/ssh/ssh_host_*',
        'rm -f "$1/etc/machine-id" && : > "$1/etc/machine-id"',
    ]
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
            "--aptopt=APT::Install-Recommends \"false\"", "--include=" + ",".join(packages)]
    argv += [f"--customize-hook={h}" for h in hooks]
    argv += [SUITE, str(tree), *mirrors]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if cp.returncode != 0:
        raise TestbedError(f"mmdebstrap failed (rc={cp.returncode}): {cp.stderr.strip()[-3000:]}")


if __name__ == "__main__":
    print(ensure_rootfs())
