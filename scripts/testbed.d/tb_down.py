"""``testbed down``: remove everything ``up`` created, also after a crash half-way.

Guarantees: only processes inside the testbed's namespaces are signalled (a process is chosen by the inode
of its network or mount namespace, read from /proc/<pid>/ns); guests are destroyed through their host's
libvirtd first; namespaces created inside the hosts are deleted; every mount is undone; the state dir is
removed only once nothing is mounted below it. Every step tolerates what is already gone, so ``down`` is
idempotent.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from tb_common import Config, State, is_mountpoint, mount_points_under, sh

TERM_GRACE = 6.0  # TCG qemu takes ~1.8 s to exit after SIGTERM


def teardown(state: State) -> list[str]:
    """Tear the testbed down; return the list of problems left (empty on success)."""
    cfg = state.config
    net_inodes, mnt_inodes = namespace_inodes(cfg)
    for host in cfg.host_names:
        _destroy_guests(cfg, host)
    _stop_containers(cfg)
    _kill_processes(net_inodes, mnt_inodes)
    _unmount_containers(cfg)
    for host in cfg.host_names:
        _remove_host(cfg, host)
    if _link_exists(cfg.mgmt_link):
        sh("ip", "link", "del", cfg.mgmt_link, check=False)
    _del_netns(cfg.phys_ns)
    if is_mountpoint(cfg.nsf_dir):
        sh("umount", str(cfg.nsf_dir), check=False)
    for note in _undo_root_changes(state):
        print(f"testbed down: {note}")
    problems = [f"process {pid} still runs in a testbed namespace" for pid in
                processes_in(net_inodes, mnt_inodes)]
    problems += [f"still mounted: {m}" for m in mount_points_under(cfg.root)]
    problems += _container_problems(cfg)
    if not problems:
        shutil.rmtree(cfg.root, ignore_errors=True)
    return problems


def _stop_containers(cfg: Config) -> None:
    """nspawn mode: power every host's container off (its guests, agent and daemons go with it)."""
    if cfg.mode == "nspawn":
        import tb_nspawn

        for host in cfg.host_names:
            tb_nspawn.stop(cfg, host)


def _unmount_containers(cfg: Config) -> None:
    if cfg.mode == "nspawn":
        import tb_nspawn

        for host in cfg.host_names:
            tb_nspawn.unmount(cfg, host)


def _container_problems(cfg: Config) -> list[str]:
    if cfg.mode != "nspawn":
        return []
    import tb_nspawn

    return [p for host in cfg.host_names for p in tb_nspawn.cleanup_problems(cfg, host)]


def namespace_inodes(cfg: Config) -> tuple[set[int], set[int]]:
    """Inodes of the testbed's network namespaces (phys, hosts and those created inside hosts) and of the
    hosts' mount namespaces."""
    net: set[int] = set()
    mnt: set[int] = set()
    for name in [cfg.phys_ns, *(cfg.netns(h) for h in cfg.host_names)]:
        ino = _ns_inode(f"/run/netns/{name}")
        if ino:
            net.add(ino)
    for host in cfg.host_names:
        ino = _ns_inode(str(cfg.mnt_handle(host)))
        if ino:
            mnt.add(ino)
        net.update(_inner_netns(cfg, host).values())
    return net, mnt


def _ns_inode(path: str) -> int | None:
    """Inode of the namespace bound at ``path`` (None if nothing is bound there)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino if os.path.ismount(path) else None


def _host_alive(cfg: Config, host: str) -> bool:
    if cfg.mode == "nspawn":
        import tb_nspawn

        return tb_nspawn.leader_pid(cfg, host) is not None
    handles = [str(cfg.mnt_handle(host)), str(cfg.uts_handle(host)), f"/run/netns/{cfg.netns(host)}"]
    return all(os.path.ismount(h) for h in handles)


def _inner_netns(cfg: Config, host: str) -> dict[str, int]:
    """Network namespaces created inside the host (its private /run/netns): name -> inode."""
    if not _host_alive(cfg, host):
        return {}
    script = "for f in /run/netns/*; do [ -e \"$f\" ] && stat -L -c '%i %n' \"$f\"; done; true"
    cp = sh(*_enter(cfg, host), "sh", "-c", script, check=False)
    found = {}
    for line in cp.stdout.splitlines():
        ino, path = line.split(" ", 1)
        found[os.path.basename(path)] = int(ino)
    return found


def _enter(cfg: Config, host: str) -> list[str]:
    """Command prefix into a live host (nspawn: nsenter straight to its PID 1, no testbed process between)."""
    if cfg.mode == "nspawn":
        import tb_nspawn

        pid = tb_nspawn.leader_pid(cfg, host)
        if pid is not None:
            return tb_nspawn.nsenter_pid(pid)
    return cfg.nsenter(host)


def _destroy_guests(cfg: Config, host: str) -> None:
    sock = cfg.libvirt_socket(host)
    if not sock.exists():
        return
    uri = f"qemu:///system?socket={sock}"
    cp = sh("virsh", "-c", uri, "list", "--all", "--name", check=False, timeout=20)
    for name in filter(None, (n.strip() for n in cp.stdout.splitlines())):
        sh("virsh", "-c", uri, "destroy", name, check=False, timeout=30)
        sh("virsh", "-c", uri, "undefine", name, "--nvram", check=False, timeout=30)


def processes_in(net_inodes: set[int], mnt_inodes: set[int]) -> list[int]:
    """Live (non-zombie) processes whose network or mount namespace is one of the given ones."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            net = os.stat(f"/proc/{entry}/ns/net").st_ino
            mnt = os.stat(f"/proc/{entry}/ns/mnt").st_ino
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (net in net_inodes or mnt in mnt_inodes):
            pids.append(int(entry))
    return pids


def _kill_processes(net_inodes: set[int], mnt_inodes: set[int]) -> None:
    """SIGTERM every process of the testbed, then SIGKILL what is left after TERM_GRACE seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_in(net_inodes, mnt_inodes)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + TERM_GRACE
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = processes_in(net_inodes, mnt_inodes)
        if not pids:
            return


def _remove_host(cfg: Config, host: str) -> None:
    if _host_alive(cfg, host):
        for name in _inner_netns(cfg, host):
            sh(*_enter(cfg, host), "ip", "netns", "del", name, check=False)
    _del_netns(cfg.netns(host))
    for handle in (cfg.mnt_handle(host), cfg.uts_handle(host)):
        if os.path.ismount(handle):
            sh("umount", str(handle), check=False)
        handle.unlink(missing_ok=True)


def _del_netns(name: str) -> None:
    if os.path.exists(f"/run/netns/{name}"):
        sh("ip", "netns", "del", name, check=False)


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def _undo_root_changes(state: State) -> list[str]:
    """Undo /run/netns's self-bind-mount if ``up`` made it and no namespace is left in it, then remove the
    empty directories recorded in the state (only a state written by an older ``up`` lists any: mount points
    are shared between testbeds and now stay). Returns notes about what had to stay (someone else uses it)."""
    notes = []
    run_netns = Path("/run/netns")
    if state.mounted_run_netns and is_mountpoint(run_netns) and not any(run_netns.iterdir()):
        sh("umount", str(run_netns), check=False)
    for d in reversed(state.created_dirs):
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass
        except OSError as e:
            notes.append(f"left {d} (created by up) in place: {e.strerror}")
    return notes
