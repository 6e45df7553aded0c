"""The tiny guest image boots under TCG and does what later tiers rely on.

Each boot runs in an empty network namespace with slirp, so the guest reaches only metadata servers
this test starts. Checked: DHCP on every NIC, metadata discovery (169.254.169.254 first, then the DHCP
server), #cloud-config (hostname, keys, users, groups, runcmd) and #! user data, SSH login, a data disk
(mke2fs + mount), the CD-ROM (/dev/sr0), the ACPI power button, and booting the ISO as a CD-ROM.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tinyguest as tg

SSH_PORT = 2222
CLOUD_CONFIG = """#cloud-config
hostname: cc-host
ssh_authorized_keys:
  - {key}
users:
  - default
  - name: alice
    groups: [wheel, adm]
    sudo: ALL=(ALL) NOPASSWD:ALL
    plain_text_passwd: 's3cret-pw'
    ssh-authorized-keys:
      - "{key}"
runcmd:
  - echo RUNCMD-RAN on $(hostname) > /root/runcmd.out
  - [ sh, -c, "echo argv-form $((6 * 7)) >> /root/runcmd.out" ]
"""
SCRIPT = "#!/bin/sh\necho USERDATA-SCRIPT-RAN as $(id -un) on $(hostname)\n"


@pytest.fixture(scope="module")
def image() -> Path:
    return tg.build_image()


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    k = tmp_path_factory.mktemp("key") / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tester@tiny", "-f", str(k)],
                   check=True)
    return k


@pytest.fixture
def netns() -> Iterator[tg.Netns]:
    with tg.Netns() as ns:
        yield ns


@pytest.fixture
def vms() -> Iterator[list[tg.Qemu]]:
    started: list[tg.Qemu] = []
    yield started
    for vm in started:
        vm.close()


def _pub(key: Path) -> str:
    return key.with_suffix(".pub").read_text().strip()


def test_disk_boot_ec2_cloud_config(image: Path, key: Path, netns: tg.Netns, vms: list[tg.Qemu],
                                    tmp_path: Path) -> None:
    md = tg.metadata_map(tmp_path / "md.json", instance_id="i-ec2", hostname="md-host.example",
                         keys=[_pub(key)], user_data=CLOUD_CONFIG.format(key=_pub(key)), style="ec2")
    data = tmp_path / "data.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(data), "16M"], check=True)
    fwd = f"tcp:169.254.169.254:80-cmd:{sys.executable} {tg.__file__} metadata {md}"
    args = ["-drive", f"file={image / 'tiny.qcow2'},if=virtio,snapshot=on",
            "-drive", f"file={data},if=virtio,format=raw",
            "-drive", f"file={image / 'tiny.iso'},media=cdrom,readonly=on",
            *tg.slirp_nic(0, net="169.254.169.0/24", ssh_port=SSH_PORT, guestfwd=fwd),
            *tg.slirp_nic(1)]
    vm = tg.Qemu(tmp_path, "ec2", args, netns)
    vms.append(vm)
    log = vm.serial
    log.wait_for(r"tiny: booted from disk", 30, vm)
    log.wait_for(r"tiny: LEASE eth0 169\.254\.169\.\d+/", 30, vm)
    log.wait_for(r"tiny-cloudinit: metadata from http://169\.254\.169\.254$", 10, vm)
    log.wait_for(r"tiny-cloudinit: hostname cc-host$", 10, vm)
    log.wait_for(r"tiny-cloudinit: \| runcmd:", 10, vm)
    log.wait_for(r"tiny-cloudinit: user-data applied \(cloud-config\)", 15, vm)
    log.wait_for(r"tiny: LEASE eth1 10\.0\.2\.\d+/", 15, vm)
    out = tg.wait_ssh(SSH_PORT, key, "hostname; cat /root/runcmd.out; grep -c '^alice:\\$6\\$' /etc/shadow",
                      timeout=20, netns=netns)
    assert out.splitlines() == ["cc-host", "RUNCMD-RAN on cc-host", "argv-form 42", "1"]
    assert "s3cret-pw" not in log.text()      # echoed user data masks passwords
    alice = tg.wait_ssh(SSH_PORT, key, "id -un; id -Gn", timeout=10, user="alice", netns=netns)
    assert alice.split()[0] == "alice" and {"wheel", "adm", "sudo"} <= set(alice.split()[1:])
    log.wait_for(r"tiny: drivers ready", 20, vm)
    disk = tg.ssh(SSH_PORT, key, "mkfs.ext2 /dev/vdb >/dev/null && mount /dev/vdb /mnt && "
                  "echo marker > /mnt/m && cat /mnt/m && umount /mnt && "
                  "dd if=/dev/sr0 bs=2048 skip=16 count=1 2>/dev/null | head -c 6 | tail -c 5; echo",
                  netns=netns)
    assert disk.returncode == 0 and disk.stdout.split() == ["marker", "CD001"], disk
    _power_button(vm)


def test_disk_boot_cloudstack_script(image: Path, key: Path, netns: tg.Netns, vms: list[tg.Qemu],
                                     tmp_path: Path) -> None:
    md = tg.metadata_map(tmp_path / "md.json", instance_id="i-cs", hostname="cs-vm",
                         keys=[_pub(key)], user_data=SCRIPT, style="cloudstack")
    # CloudStack: the metadata server is the DHCP server (slirp's 10.0.2.2 -> this netns's 127.0.0.1)
    server = subprocess.Popen(netns.argv(sys.executable, tg.__file__, "metadata", str(md), "--listen",
                                         "127.0.0.1:80"))
    try:
        vm = tg.Qemu(tmp_path, "cs", ["-drive", f"file={image / 'tiny.qcow2'},if=virtio,snapshot=on",
                                      *tg.slirp_nic(0, ssh_port=SSH_PORT)], netns)
        vms.append(vm)
        vm.serial.wait_for(r"tiny-cloudinit: metadata from http://10\.0\.2\.2$", 40, vm)
        vm.serial.wait_for(r"tiny-cloudinit: > USERDATA-SCRIPT-RAN as root on cs-vm", 15, vm)
        vm.serial.wait_for(r"tiny-cloudinit: user-data applied \(script\)", 5, vm)
        assert tg.wait_ssh(SSH_PORT, key, "hostname", timeout=20, netns=netns).strip() == "cs-vm"
        _power_button(vm)
    finally:
        server.kill()
        server.wait()
    assert "/latest/meta-data/public-keys\n" in (tmp_path / "md.json.log").read_text()


def test_iso_boots_as_cdrom(image: Path, netns: tg.Netns, vms: list[tg.Qemu], tmp_path: Path) -> None:
    vm = tg.Qemu(tmp_path, "iso", ["-cdrom", str(image / "tiny.iso"), "-boot", "d", *tg.slirp_nic(0)], netns)
    vms.append(vm)
    vm.serial.wait_for(r"tiny: booted from cdrom", 30, vm)
    vm.serial.wait_for(r"tiny: LEASE eth0 10\.0\.2\.15/", 20, vm)
    vm.serial.wait_for(r"tiny-cloudinit: no metadata server", 15, vm)
    vm.serial.wait_for(r"tiny: sshd up", 5, vm)
    _power_button(vm)


def _power_button(vm: tg.Qemu) -> None:
    """ACPI power button -> the guest powers off: qemu exits by itself within 5 s."""
    assert vm.qmp("system_powerdown") == {"return": {}}
    assert vm.wait_exit(5) == 0
    vm.serial.wait_for(r"tiny: power button -> poweroff", 1)
