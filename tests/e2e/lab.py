"""Helpers for the end-to-end tier: the testbed, tiny-image guests, DHCP + metadata namespaces.

Everything here drives real components: ``scripts/testbed`` (namespaces, libvirtd, sshd), libvirt over
``qemu+tcp://<host ip>/system``, dnsmasq and a Python metadata server in a namespace created inside a host,
and ``ssh`` run inside that namespace (the guest network is only reachable from the host's bridge).

This module holds the testbed part and re-exports the guest and DHCP helpers, so tests import one module::

    from lab import Testbed, GuestSpec, start_guest, DhcpNamespace, GuestRecord, ...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lab_dhcp import DhcpNamespace, GuestRecord, ssh_keypair
from lab_guest import Guest, GuestSpec, domain_xml, make_overlay, start_guest, wait_for

from controller.compute.deploy import agent_alive_sh

REPO = Path(__file__).resolve().parents[2]
TESTBED = REPO / "scripts" / "testbed"
BUILD_TINY = REPO / "scripts" / "build-tiny-image"
PS_URL = "/var/lib/zstack-py/e2e-localps"  # /var/lib/zstack-py is private to each testbed host
# A SharedMountPoint primary storage: one directory every testbed host sees at this path (plain hosts share this
# machine's file system; nspawn hosts get it bound read-write, tests/e2e/conftest.py e2e_shares), inside the
# agents' default storage_roots.
SHARED_PS_URL = "/zstack_ps/e2e-shared"
AGENT_PID = "/var/lib/zstack-py/kvmagent.pid"

__all__ = [
    "BUILD_TINY",
    "PS_URL",
    "REPO",
    "SHARED_PS_URL",
    "TESTBED",
    "DhcpNamespace",
    "Footprint",
    "Guest",
    "GuestRecord",
    "GuestSpec",
    "LabHost",
    "Testbed",
    "TinyImage",
    "bring_up",
    "domain_xml",
    "footprint",
    "host_shares",
    "kill_agent",
    "leftovers",
    "make_overlay",
    "reset_host",
    "run_testbed",
    "ssh_keypair",
    "start_guest",
    "tear_down",
    "testbed_mode",
    "tiny_image",
    "wait_for",
]


@dataclass(frozen=True)
class LabHost:
    """One simulated KVM host, as described by ``scripts/testbed status --json``."""

    name: str
    hostname: str
    ip: str
    ssh_user: str
    ssh_password: str
    bridge: str
    netns: str
    libvirt_uri: str  # qemu+tcp://<ip>/system, usable from the root namespace
    libvirt_socket_uri: str
    nsenter: tuple[str, ...]  # prefix that runs a command inside the host
    host_dir: Path
    mode: str = "plain"  # plain daemons, or nspawn: the host boots systemd (the agent is a systemd unit)

    def cmd(self, *argv: str) -> list[str]:
        """argv prefixed so that it runs inside the host (its network + mount namespace)."""
        return [*self.nsenter, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv inside the host, capture output; raise CalledProcessError (with stderr) if check fails."""
        cp = subprocess.run(self.cmd(*argv), capture_output=True, text=True, timeout=timeout, input=input)
        if check and cp.returncode != 0:
            raise subprocess.CalledProcessError(cp.returncode, cp.args, cp.stdout, cp.stderr)
        return cp


AGENT_UNIT = "zstack-py-kvmagent"


def kill_agent(host: LabHost, sig: int = signal.SIGTERM) -> None:
    """Signal the host's agent — only if the pid file still names a live agent of that host (all plain-mode
    testbed hosts share one PID namespace: a stale pid may belong to another host's agent by now). On a
    systemd host the unit's main process is signalled (systemd restarts it: Restart=always)."""
    if host.mode == "nspawn":
        host.run("systemctl", "kill", f"--signal={int(sig)}", "--kill-who=main", AGENT_UNIT, check=False)
        return
    alive = agent_alive_sh(AGENT_PID)
    host.run("sh", "-c", f"{alive} && kill -{int(sig)} $(cat {AGENT_PID}) || true", check=False)


# Everything the flat provider leaves on a host: its namespaces (and their dnsmasq/metadata processes), the
# outer veths, the ebtables chains and its state directory.
_FLAT_RESET = ("for n in $(ip netns list | awk '/^zsfn-/{print $1}'); do "
               "ip netns pids $n | xargs -r kill -9; ip netns del $n; done; "
               "ip -o link | awk -F': ' '/ zfo/{print $2}' | cut -d@ -f1 | xargs -r -n1 ip link del; "
               "ebtables -F; ebtables -X; ebtables -t nat -F; ebtables -t nat -X; rm -rf /var/lib/zstack-py/flatnet")
# security groups: the agent's kept set and the kernel tables (nft may be absent on an older host tree)
_SECGROUP_RESET = ("rm -f /var/lib/zstack-py/secgroup.json; nft delete table inet zstack_sg 2>/dev/null; "
                   "nft delete table bridge zstack_sg 2>/dev/null; true")
_DOMAINS_RESET = ("for d in $(virsh -c qemu:///system list --all --name); do "
                  "virsh -c qemu:///system destroy $d; virsh -c qemu:///system undefine $d; done")


def reset_host(host: LabHost, *, flat: bool = False, paths: tuple[str, ...] = (PS_URL,), log_tail: int = 0,
               agent_out_tail: int = 0) -> None:
    """Bring a testbed host back to "no controller ever managed it", best effort (never raises on a step).

    In order: print the last ``log_tail`` non-request lines of the agent's log and the last ``agent_out_tail``
    lines of its stdout/stderr file (a failing run's account; nothing printed when both are 0); destroy and
    undefine every domain; stop the agent (only a live agent of this host, see :func:`kill_agent`); with
    ``flat``, remove the flat provider's namespaces, veths, ebtables chains and state; remove the security-group
    tables and the agent's kept set; remove ``paths`` (by default the e2e local primary storage)."""
    if log_tail or agent_out_tail:
        show = []
        if log_tail:
            show.append(f"grep -v 'GET \\|POST ' /var/log/zstack-py/kvmagent.log | tail -{int(log_tail)}")
        if agent_out_tail and host.mode == "nspawn":
            show.append(f"journalctl -u {AGENT_UNIT} -n {int(agent_out_tail)} --no-pager -o cat")
        elif agent_out_tail:
            show.append(f"tail -{int(agent_out_tail)} /var/log/zstack-py/kvmagent.out")
        print(host.name, host.run("sh", "-c", "; ".join(show), check=False).stdout)
    host.run("sh", "-c", _DOMAINS_RESET, check=False)
    if host.mode == "nspawn":  # stopped (not killed: systemd would restart it); the next deploy starts it
        host.run("systemctl", "stop", AGENT_UNIT, check=False)
    else:
        kill_agent(host)
    if flat:
        host.run("sh", "-c", _FLAT_RESET, check=False)
    host.run("sh", "-c", _SECGROUP_RESET, check=False)
    if paths:
        host.run("rm", "-rf", *paths, check=False)


@dataclass(frozen=True)
class Testbed:
    __test__ = False  # not a pytest test class

    state_dir: Path
    prefix: str
    mgmt_link: str
    mgmt_ip: str
    phys_netns: str
    ssh_key: Path  # private key whose public half is in every host's root authorized_keys
    hosts: tuple[LabHost, ...]

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"host {name!r} is not in the testbed; have {[h.name for h in self.hosts]}")

    @classmethod
    def from_status(cls, doc: dict) -> Testbed:
        hosts = tuple(
            LabHost(name=h["name"], hostname=h["hostname"], ip=h["ip"], ssh_user=h["ssh_user"],
                    ssh_password=h["ssh_password"], bridge=h["bridge"], netns=h["netns"], libvirt_uri=h["libvirt_uri"],
                    libvirt_socket_uri=h["libvirt_socket_uri"], nsenter=tuple(h["nsenter"]),
                    host_dir=Path(h["host_dir"]), mode=h.get("mode", "plain"))
            for h in doc["hosts"])
        return cls(state_dir=Path(doc["state_dir"]), prefix=doc["prefix"], mgmt_link=doc["mgmt_link"],
                   mgmt_ip=doc["mgmt_ip"], phys_netns=doc["phys_netns"], ssh_key=Path(doc["ssh_key"]),
                   hosts=hosts)

    @classmethod
    def load(cls, state_dir: Path) -> Testbed:
        cp = run_testbed(state_dir, "status", "--json")
        return cls.from_status(json.loads(cp.stdout))


def run_testbed(state_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/testbed --state-dir DIR ARGS``; raise AssertionError with its output if it fails."""
    cp = subprocess.run([str(TESTBED), "--state-dir", str(state_dir), *args], capture_output=True, text=True,
                        timeout=timeout)
    if cp.returncode != 0:
        raise AssertionError(f"scripts/testbed {' '.join(args)} failed rc={cp.returncode}:\n{cp.stdout}{cp.stderr}")
    return cp


def testbed_mode() -> str:
    """The e2e testbeds' mode: $ZSTACK_E2E_TESTBED_MODE, else $ZSTACK_TESTBED_MODE (scripts/testbed's own
    variable), else ``nspawn``: hosts boot a real systemd and run the agent as a systemd unit, as the design's
    systemd-managed hosts do. ``plain`` (plain daemons in namespaces) stays selectable for machines without
    systemd-nspawn."""
    return os.environ.get("ZSTACK_E2E_TESTBED_MODE") or os.environ.get("ZSTACK_TESTBED_MODE") or "nspawn"


testbed_mode.__test__ = False  # type: ignore[attr-defined]  # imported into test modules: not a test


def host_shares(mode: str, *, ro: tuple[Path, ...] = (), rw: tuple[Path, ...] = ()) -> tuple[str, ...]:
    """``--share`` values giving nspawn hosts the paths of this machine that plain hosts see anyway (plain
    hosts share this machine's file system: nothing to share)."""
    if mode != "nspawn":
        return ()
    return (*(str(p) for p in ro), *(f"{p}:rw" for p in rw))


def bring_up(state_dir: Path, hosts: int = 2, prefix: str = "tb", mgmt_net: str = "10.99.0", mode: str | None = None,
             shares: tuple[Path | str, ...] = ()) -> Testbed:
    """``testbed up`` (``mode`` None: the testbed's default, $ZSTACK_TESTBED_MODE or plain); ``shares`` (nspawn
    mode) are bind-mounted into every host (DIR read-only, DIR:rw read-write)."""
    extra = [a for d in shares for a in ("--share", str(d))] + (["--mode", mode] if mode else [])
    run_testbed(state_dir, "up", str(hosts), "--prefix", prefix, "--mgmt-net", mgmt_net, *extra)
    return Testbed.load(state_dir)


def tear_down(state_dir: Path) -> None:
    run_testbed(state_dir, "down")


@dataclass(frozen=True)
class TinyImage:
    qcow2: Path
    iso: Path


def tiny_image() -> TinyImage:
    """The tiny guest image, built (cached) by ``scripts/build-tiny-image`` into build/tiny.

    ``ZSTACK_TINY_DIR`` may point at a directory that already holds tiny.qcow2 and tiny.iso."""
    pre = os.environ.get("ZSTACK_TINY_DIR")
    if pre:
        out = Path(pre)
    else:
        if not BUILD_TINY.exists():
            raise AssertionError(f"{BUILD_TINY} does not exist; set ZSTACK_TINY_DIR to a built image dir")
        cp = subprocess.run([str(BUILD_TINY)], capture_output=True, text=True, timeout=600, cwd=REPO)
        if cp.returncode != 0:
            raise AssertionError(f"build-tiny-image failed rc={cp.returncode}:\n{cp.stdout}{cp.stderr}")
        out = REPO / "build" / "tiny"
    image = TinyImage(qcow2=out / "tiny.qcow2", iso=out / "tiny.iso")
    for p in (image.qcow2, image.iso):
        if not p.is_file():
            raise AssertionError(f"tiny image file {p} is missing")
    return image


@dataclass
class Footprint:
    """What a testbed consists of, recorded while it is up, to prove ``down`` removed all of it."""

    state_dir: Path
    netns_names: list[str]
    links: list[str]
    net_inodes: set[int] = field(default_factory=set)
    mnt_inodes: set[int] = field(default_factory=set)
    pids: dict[int, str] = field(default_factory=dict)  # pid -> /proc/<pid>/stat start time


def footprint(tb: Testbed) -> Footprint:
    """Record the namespaces (also those created inside hosts), links, mount namespaces and processes."""
    fp = Footprint(state_dir=tb.state_dir, netns_names=[tb.phys_netns, *(h.netns for h in tb.hosts)],
                   links=[tb.mgmt_link])
    for name in fp.netns_names:
        fp.net_inodes.add(os.stat(f"/run/netns/{name}").st_ino)
    for h in tb.hosts:
        if h.mode == "nspawn":  # the container's own mount namespace (its PID 1's)
            fp.mnt_inodes.add(int(h.run("stat", "-L", "-c", "%i", "/proc/1/ns/mnt").stdout))
        else:
            mnt = next(a.split("=", 1)[1] for a in h.nsenter if a.startswith("--mount="))
            fp.mnt_inodes.add(os.stat(mnt).st_ino)
        inner = h.run("sh", "-c", "for f in /run/netns/*; do [ -e \"$f\" ] && stat -L -c %i \"$f\"; done; true")
        fp.net_inodes.update(int(x) for x in inner.stdout.split())
    for pid, start in _processes(fp.net_inodes, fp.mnt_inodes).items():
        fp.pids[pid] = start
    assert fp.pids, "a running testbed must have processes (libvirtd, sshd) in its namespaces"
    return fp


def _processes(net_inodes: set[int], mnt_inodes: set[int]) -> dict[int, str]:
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            net = os.stat(f"/proc/{entry}/ns/net").st_ino
            mnt = os.stat(f"/proc/{entry}/ns/mnt").st_ino
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z" and (net in net_inodes or mnt in mnt_inodes):
            found[int(entry)] = stat[19]
    return found


def leftovers(fp: Footprint) -> list[str]:
    """Everything of ``fp`` that still exists: namespaces, links, mounts, processes, the state dir."""
    left = [f"netns {n}" for n in fp.netns_names if os.path.exists(f"/run/netns/{n}")]
    left += [f"link {n}" for n in fp.links if os.path.exists(f"/sys/class/net/{n}")]
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    left += [f"mount {m}" for m in mounts if m.startswith(str(fp.state_dir))
             or any(m == f"/run/netns/{n}" for n in fp.netns_names)]
    left += [f"process {pid} in a testbed namespace" for pid in _processes(fp.net_inodes, fp.mnt_inodes)]
    for pid, start in fp.pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[19] == start and stat[0] != "Z":
            left.append(f"process {pid} (recorded while up) still runs")
    if fp.state_dir.exists():
        left.append(f"state dir {fp.state_dir}")
    return left
