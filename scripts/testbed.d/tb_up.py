"""``testbed up``: build the shared L2, the management link and N simulated KVM hosts.

Guarantees: the state file is written before anything is created and every created thing is either
recorded there or derived from the recorded configuration, so ``down`` removes a half-built testbed.
A failed ``up`` tears down what it built before re-raising.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import time
import uuid
import warnings

from tb_common import (
    BRIDGE,
    PHYS_BRIDGE,
    PRIVATE_DIRS,
    SSH_PASSWORD,
    Config,
    State,
    TestbedError,
    is_mountpoint,
    sh,
)

READY_TIMEOUT = 30.0


def build(cfg: Config, state: State) -> None:
    """Create everything for ``cfg`` (the state is saved first by the caller)."""
    if cfg.mode == "nspawn":
        import tb_nspawn
        import tb_rootfs

        tb_nspawn.check_dependencies()
        lower = tb_rootfs.ensure_rootfs()
    _prepare_root(cfg, state)
    _make_phys(cfg)
    for host in cfg.host_names:
        if cfg.mode == "nspawn":
            _make_host_net(cfg, host)
            tb_nspawn.prepare(cfg, host, lower, (cfg.root / "ssh" / "id_ed25519.pub").read_text())
            tb_nspawn.boot(cfg, host)
        else:
            _make_host(cfg, host)
    for host in cfg.host_names:
        if cfg.mode == "nspawn":
            took = tb_nspawn.wait_booted(cfg, host)
            print(f"testbed up: {host} booted systemd in {took:.2f} s")
        _wait_ready(cfg, host)
    state.phase = "up"
    state.save()


def _prepare_root(cfg: Config, state: State) -> None:
    """Mount points, the private dir that holds the mount-namespace handles, and the testbed's SSH key."""
    # sshd's privilege-separation directory and the mount points of the hosts' private dirs are shared by
    # every testbed on the machine (and the system's sshd): created when missing, never recorded, so no
    # `down` removes them. Removing an empty mount point in the root namespace detaches what ANOTHER running
    # testbed's hosts have mounted over it in theirs (their libvirtd, agent and sshd lose their dirs).
    os.makedirs("/run/sshd", mode=0o700, exist_ok=True)
    for d in PRIVATE_DIRS:
        os.makedirs(d, mode=0o700 if d == "/root/.ssh" else 0o755, exist_ok=True)
    if not is_mountpoint("/run/netns"):
        state.mounted_run_netns = True  # `ip netns add` bind-mounts /run/netns onto itself
        state.save()
    cfg.nsf_dir.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(cfg.nsf_dir):
        sh("mount", "--bind", str(cfg.nsf_dir), str(cfg.nsf_dir))
        sh("mount", "--make-private", str(cfg.nsf_dir))
    key = cfg.root / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(mode=0o700, exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "zstack-testbed", "-f", str(key))


def _make_phys(cfg: Config) -> None:
    """The "physical" L2 segment (netns + bridge) and the management veth from the root namespace."""
    ns = cfg.phys_ns
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "link", "add", PHYS_BRIDGE, "type", "bridge")
    sh("ip", "-n", ns, "link", "set", PHYS_BRIDGE, "up")
    sh("ip", "link", "add", cfg.mgmt_link, "type", "veth", "peer", "name", "mgmt-p", "netns", ns)
    sh("ip", "-n", ns, "link", "set", "mgmt-p", "master", PHYS_BRIDGE, "up")
    sh("ip", "addr", "add", f"{cfg.mgmt_ip}/24", "dev", cfg.mgmt_link)
    sh("ip", "link", "set", cfg.mgmt_link, "up")


def _make_host(cfg: Config, host: str) -> None:
    _write_host_files(cfg, host)
    _make_host_net(cfg, host)
    handle = cfg.mnt_handle(host)
    handle.touch()
    sh("unshare", f"--mount={handle}", "--propagation", "slave", "true")
    cfg.uts_handle(host).touch()
    sh("unshare", f"--uts={cfg.uts_handle(host)}", "hostname", cfg.hostname(host))
    d = cfg.host_dir(host)
    mounts = ["mount -t sysfs sysfs /sys"]
    mounts += [f"mount --bind {shlex.quote(str(d / name))} {inner}" for inner, name in PRIVATE_DIRS.items()]
    mounts.append(f"mount --bind {shlex.quote(str(d / 'shadow'))} /etc/shadow")
    sh(*cfg.nsenter(host), "sh", "-ec", "; ".join(mounts))
    sh(*cfg.nsenter(host), "/usr/sbin/libvirtd", "-d", "--listen", "--pid-file", str(d / "libvirtd.pid"))
    sh(*cfg.nsenter(host), "/usr/sbin/sshd", "-f", str(d / "sshd_config"))


def _make_host_net(cfg: Config, host: str) -> None:
    """The host's network namespace: eth0 (veth into the phys bridge) enslaved to br_eth0, which has the IP."""
    ns, ip = cfg.netns(host), cfg.host_ip(host)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", cfg.uplink(host), "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", cfg.uplink(host), "netns", cfg.phys_ns)
    sh("ip", "-n", cfg.phys_ns, "link", "set", cfg.uplink(host), "master", PHYS_BRIDGE, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "-n", ns, "link", "set", BRIDGE, "up")
    sh("ip", "-n", ns, "link", "set", "eth0", "master", BRIDGE, "up")
    # Pin the bridge's MAC to its uplink's. A Linux bridge otherwise takes the lowest MAC of its ports and
    # changes it whenever a port with a lower MAC comes or goes (a DHCP namespace's veth, a VM's tap); the
    # management network then keeps sending to the old MAC until its ARP entry expires (~30 s of timeouts).
    sh("ip", "-n", ns, "link", "set", BRIDGE, "address", _link_mac(ns, "eth0"))
    sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", BRIDGE)


def _write_host_files(cfg: Config, host: str) -> None:
    """The host's private dirs, libvirt and sshd configuration, shadow file and keys."""
    d, ip = cfg.host_dir(host), cfg.host_ip(host)
    for name in PRIVATE_DIRS.values():
        (d / name).mkdir(parents=True, exist_ok=True)
    etc = d / PRIVATE_DIRS["/etc/libvirt"]
    host_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"zstack-testbed:{cfg.state_dir}:{host}")
    (etc / "libvirtd.conf").write_text(
        f'host_uuid = "{host_uuid}"\nlisten_tls = 0\nlisten_tcp = 1\nlisten_addr = "{ip}"\n'
        'auth_tcp = "none"\nauth_unix_rw = "none"\nlog_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')
    # stdio_handler=file: virtlogd's socket would live in the private /run/libvirt; the rest keeps the
    # daemons of different hosts from clashing (cgroups are hidden by the fresh /sys).
    (etc / "qemu.conf").write_text(
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\nsecurity_driver = "none"\n'
        f'stdio_handler = "file"\ncgroup_controllers = [ ]\nnamespaces = [ ]\nmigration_host = "{ip}"\n')
    for conf in ("libvirt.conf", "libvirt-admin.conf"):
        if os.path.exists(f"/etc/libvirt/{conf}") and not (etc / conf).exists():
            shutil.copy(f"/etc/libvirt/{conf}", etc / conf)
    keys = d / "sshkeys"
    keys.mkdir(exist_ok=True)
    if not (keys / "ssh_host_ed25519_key").exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "ssh_host_ed25519_key"))
    (d / "sshd_config").write_text(
        f"ListenAddress {ip}\nPort 22\nHostKey {keys / 'ssh_host_ed25519_key'}\nPidFile {d / 'sshd.pid'}\n"
        "PermitRootLogin yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nAuthorizedKeysFile .ssh/authorized_keys\nUsePAM no\nStrictModes no\n"
        "PrintMotd no\nSubsystem sftp /usr/lib/openssh/sftp-server\n")
    root_ssh = d / PRIVATE_DIRS["/root/.ssh"]
    root_ssh.chmod(0o700)
    pub = (cfg.root / "ssh" / "id_ed25519.pub").read_text()
    (root_ssh / "authorized_keys").write_text(pub)
    _write_shadow(d / "shadow")


def _write_shadow(path: os.PathLike[str]) -> None:
    """A copy of /etc/shadow where root's password is SSH_PASSWORD (bind-mounted over /etc/shadow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # stdlib until 3.13; the testbed runs on Debian 12's 3.11

        hashed = crypt.crypt(SSH_PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
    lines = []
    with open("/etc/shadow") as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            if fields[0] == "root":
                fields[1] = hashed
            lines.append(":".join(fields))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


def _wait_ready(cfg: Config, host: str) -> None:
    """Wait until libvirtd answers on its socket and TCP port and sshd accepts TCP connections."""
    deadline = time.monotonic() + READY_TIMEOUT
    ip = cfg.host_ip(host)
    for port in (16509, 22):
        while not _can_connect(ip, port):
            if time.monotonic() > deadline:
                raise TestbedError(f"host {host}: nothing listens on {ip}:{port} after {READY_TIMEOUT}s; "
                                   f"see {cfg.host_dir(host)}/log-libvirt/libvirtd.log")
            time.sleep(0.05)
    uri = f"qemu:///system?socket={cfg.libvirt_socket(host)}"
    while sh("virsh", "-c", uri, "uri", check=False, timeout=10).returncode != 0:
        if time.monotonic() > deadline:
            raise TestbedError(f"host {host}: libvirtd does not answer on {uri}")
        time.sleep(0.1)


def _can_connect(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def _link_mac(netns: str, ifname: str) -> str:
    """The MAC address of ``ifname`` in network namespace ``netns``."""
    out = sh("ip", "-n", netns, "-o", "link", "show", ifname).stdout
    return out.split("link/ether", 1)[1].split()[0]
