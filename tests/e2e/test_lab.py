"""Issue 3 end to end: the testbed, tiny guests with DHCP + metadata per host, SSH, CD-ROM boot, ACPI stop.

Each host gets its own DHCP/metadata namespace (same IP and MAC on both, kept host-local by ebtables).
h1's dnsmasq sends option 121 with a route to 169.254.169.254 via the DHCP server, h2's does not, so h1's
guest must fetch its metadata from 169.254.169.254 and h2's guest must fall back to the DHCP server address.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from lab import (
    DhcpNamespace,
    Guest,
    GuestRecord,
    GuestSpec,
    Testbed,
    TinyImage,
    bring_up,
    footprint,
    host_shares,
    leftovers,
    make_overlay,
    run_testbed,
    ssh_keypair,
    start_guest,
    tear_down,
    testbed_mode,
    wait_for,
)

pytestmark = pytest.mark.e2e
SERVER_IP = "10.100.0.2"


@dataclass
class Booted:
    host: str
    ns: DhcpNamespace
    guest: Guest
    record: GuestRecord
    lease_ip: str
    lease_seconds: float


@dataclass
class Pair:
    key: Path
    booted: dict[str, Booted]


def _prepare(tb: Testbed, tiny: TinyImage, work: Path, host: str, idx: int, route: bool,
             pub: str) -> tuple[DhcpNamespace, GuestSpec, GuestRecord]:
    name = f"e2e-{host}"
    rec = GuestRecord(mac=f"52:54:00:aa:00:{10 + idx:02x}", ip=f"10.100.0.{10 + idx}", hostname=f"guest-{host}",
                      instance_id=f"i-{host}", public_keys=[pub],
                      user_data=f"#cloud-config\nhostname: guest-{host}\n")
    ns = DhcpNamespace(tb.host(host), work, metadata_route=route)
    ns.add_guest(rec)
    spec = GuestSpec(name=name, mac=rec.mac, console=work / f"{name}.console",
                     disk=make_overlay(tiny.qcow2, work / f"{name}.qcow2"))
    return ns, spec, rec


@pytest.fixture(scope="module")
def pair(testbed: Testbed, tiny: TinyImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One guest per host, booted at the same time, each served by its host's own DHCP namespace."""
    work = tmp_path_factory.mktemp("pair")
    key, pub = ssh_keypair(work)
    namespaces: list[DhcpNamespace] = []
    started: list[Guest] = []
    try:
        plans = {h: _prepare(testbed, tiny, work, h, i, h == "h1", pub) for i, h in enumerate(("h1", "h2"), 1)}
        for ns, _, _ in plans.values():
            namespaces.append(ns)
            ns.start()
        t0 = {}
        for h, (_, spec, _) in plans.items():
            t0[h] = time.monotonic()
            started.append(start_guest(testbed.host(h), spec))
        booted = {}
        for (h, (ns, _, rec)), guest in zip(plans.items(), started, strict=True):
            ip = guest.wait_lease()
            booted[h] = Booted(h, ns, guest, rec, ip, time.monotonic() - t0[h])
            print(f"\n{h}: start -> LEASE {ip} in {booted[h].lease_seconds:.2f}s")
        yield Pair(key, booted)
    finally:
        for g in started:
            g.destroy()
        for ns in namespaces:
            ns.stop()


SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5"]


@pytest.mark.parametrize("host", ["h1", "h2"])
def test_host_ssh_by_password_and_key_and_libvirt_over_tcp(testbed: Testbed, host: str) -> None:
    """AddKvmHost's way in (root + password) and the key way reach the host's own sshd, hostname and
    libvirtd; the real machine's root password is untouched."""
    h = testbed.host(host)
    by_password = subprocess.run(["sshpass", "-p", h.ssh_password, "ssh", *SSH_OPTS, "-o", "PubkeyAuthentication=no",
                                  f"{h.ssh_user}@{h.ip}", "hostname; ip -o -4 addr show br_eth0"],
                                 capture_output=True, text=True, timeout=30)
    assert by_password.returncode == 0, by_password.stderr
    assert by_password.stdout.splitlines()[0] == h.hostname
    assert f"inet {h.ip}/24" in by_password.stdout
    by_key = subprocess.run(["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-i", str(testbed.ssh_key),
                             f"{h.ssh_user}@{h.ip}", "hostname"], capture_output=True, text=True, timeout=30)
    assert by_key.returncode == 0 and by_key.stdout.strip() == h.hostname, by_key.stderr
    real = next(line for line in Path("/etc/shadow").read_text().splitlines() if line.startswith("root:"))
    assert h.run("grep", "^root:", "/etc/shadow").stdout.strip() != real
    conn = libvirt.open(h.libvirt_uri)
    try:
        assert conn.getHostname() == h.hostname
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["h1", "h2"])
def test_guest_gets_its_lease_from_its_own_host(pair: Pair, host: str) -> None:
    b = pair.booted[host]
    assert b.lease_ip == b.record.ip
    assert wait_for(lambda: b.ns.leases().get(b.record.mac), 10, "dnsmasq lease record") == b.record.ip
    other = pair.booted["h2" if host == "h1" else "h1"]
    assert b.record.mac not in other.ns.leases(), "DHCP crossed hosts"
    assert f"server={SERVER_IP}" in b.guest.console_text() or f"dhcp-server={SERVER_IP}" in b.guest.console_text()


@pytest.mark.parametrize(("host", "expected_dst"), [("h1", "169.254.169.254"), ("h2", SERVER_IP)])
def test_user_data_comes_from_the_metadata_server(pair: Pair, host: str, expected_dst: str) -> None:
    """h1 (option 121) reaches 169.254.169.254; h2 (no 121) falls back to the DHCP server address."""
    b = pair.booted[host]
    b.guest.wait_console(r"user-data for|user-data \(\d+ bytes\)|hostname", timeout=60)
    fetched = wait_for(lambda: [r for r in b.ns.metadata_requests() if r["path"] == "/latest/user-data"],
                       30, f"{host}'s guest to fetch its user data")
    assert all(r["src"] == b.record.ip and r["instance_id"] == b.record.instance_id for r in fetched)
    assert {r["dst"] for r in fetched} == {expected_dst}, json.dumps(b.ns.metadata_requests())
    assert all(r["status"] == 200 for r in fetched)
    if host == "h2":
        assert not [r for r in b.ns.metadata_requests() if r["dst"] == "169.254.169.254"]


@pytest.mark.parametrize("host", ["h1", "h2"])
def test_ssh_login_with_injected_key_reads_hostname(pair: Pair, host: str) -> None:
    b = pair.booted[host]

    def login() -> subprocess.CompletedProcess[str] | None:
        cp = b.ns.ssh(b.lease_ip, pair.key, "hostname")
        return cp if cp.returncode == 0 else None

    cp = wait_for(login, 60, f"SSH login to {host}'s guest", interval=0.5)
    assert cp.stdout.strip() == b.record.hostname


def test_acpi_shutdown_powers_off_within_5s(pair: Pair) -> None:
    b = pair.booted["h2"]
    b.guest.wait_console(r"tiny: sshd (up|started)", timeout=60)
    seconds = b.guest.shutdown(timeout=30)
    print(f"\nvirsh shutdown -> powered off in {seconds:.2f}s")
    assert "shutting down" in b.guest.console_text() or "poweroff" in b.guest.console_text().lower()
    assert seconds < 5, f"ACPI shutdown took {seconds:.2f}s"


def test_iso_boots_as_cdrom(testbed: Testbed, tiny: TinyImage, guests: list[Guest], tmp_path: Path) -> None:
    spec = GuestSpec(name="e2e-cdrom", mac="52:54:00:aa:00:20", console=tmp_path / "cdrom.console",
                     cdrom=tiny.iso, boot="cdrom")
    guests.append(start_guest(testbed.host("h1"), spec))
    guests[-1].wait_console(r"tiny: booted from cdrom", timeout=90)


X_STATE_DIR = Path("/var/lib/zstack-py-testbed-e2e-x")


def test_down_leaves_nothing(tiny: TinyImage, tmp_path: Path) -> None:
    """A separate 1-host testbed (own prefix, net and state dir) with a guest, an inner namespace and a
    process in it: ``down`` removes all of it. Also: ``up`` again is a no-op, another N is refused."""
    tear_down(X_STATE_DIR)
    mode = testbed_mode()
    tb = bring_up(X_STATE_DIR, hosts=1, prefix="tbx", mgmt_net="10.98.0", mode=mode,
                  shares=host_shares(mode, ro=(tiny.iso.parent,), rw=(tmp_path,)))
    try:
        h = tb.host("h1")
        before = json.loads(run_testbed(X_STATE_DIR, "status", "--json").stdout)
        run_testbed(X_STATE_DIR, "up", "1", "--prefix", "tbx", "--mgmt-net", "10.98.0", "--mode", mode,
                    *(a for s in host_shares(mode, ro=(tiny.iso.parent,), rw=(tmp_path,)) for a in ("--share", s)))
        after = json.loads(run_testbed(X_STATE_DIR, "status", "--json").stdout)
        pid = "leader_pid" if h.mode == "nspawn" else "libvirtd_pid"  # the host's systemd, or its libvirtd
        assert before["hosts"][0][pid] == after["hosts"][0][pid] is not None
        with pytest.raises(AssertionError, match="already up"):
            run_testbed(X_STATE_DIR, "up", "2", "--prefix", "tbx", "--mgmt-net", "10.98.0")
        rc = subprocess.run(["scripts/testbed", "--state-dir", str(X_STATE_DIR), "exec", "h1", "sh", "-c",
                             "exit 7"], cwd=Path(__file__).resolve().parents[2]).returncode
        assert rc == 7
        h.run("ip", "netns", "add", "inner")
        h.run("ip", "netns", "exec", "inner", "sh", "-c", "setsid -f sleep 600 </dev/null >/dev/null 2>&1")
        spec = GuestSpec(name="e2e-down", mac="52:54:00:aa:00:30", console=tmp_path / "down.console",
                         cdrom=tiny.iso, boot="cdrom")
        start_guest(h, spec).close()
        fp = footprint(tb)
        inner_ino = int(h.run("stat", "-L", "-c", "%i", "/run/netns/inner").stdout)
        assert inner_ino in fp.net_inodes
        assert any(Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x00600\x00" for pid in fp.pids)
    except BaseException:
        tear_down(X_STATE_DIR)
        raise
    t0 = time.monotonic()
    tear_down(X_STATE_DIR)
    print(f"\ntestbed down (1 host, 1 running guest) took {time.monotonic() - t0:.2f}s")
    assert leftovers(fp) == []
    qemu = subprocess.run(["pgrep", "-f", "guest=e2e-down"], capture_output=True, text=True)
    assert qemu.stdout == "", f"qemu of the guest survived: {qemu.stdout}"
