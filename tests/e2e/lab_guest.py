"""Tiny-image guests defined and started directly through a testbed host's libvirtd (qemu+tcp).

Guests are TCG (domain type ``qemu``) with a virtio disk (a qcow2 overlay on the tiny image) or the tiny ISO
as a CD-ROM, a virtio NIC on the host's bridge and the serial console written to a file.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from xml.sax.saxutils import quoteattr

import libvirt

if TYPE_CHECKING:
    from lab import LabHost

T = TypeVar("T")
LEASE_RE = r"tiny: LEASE (?:[a-z]\w* )?(\d+\.\d+\.\d+\.\d+)/"


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``probe`` until it returns a truthy value and return that; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class GuestSpec:
    """A guest: ``disk`` (qcow2, virtio) and/or ``cdrom`` (raw ISO, IDE); ``boot`` is 'hd' or 'cdrom'."""

    name: str
    mac: str
    console: Path
    disk: Path | None = None
    cdrom: Path | None = None
    boot: str = "hd"
    memory_mib: int = 128
    bridge: str = "br_eth0"

    def __post_init__(self) -> None:
        if self.boot not in ("hd", "cdrom"):
            raise ValueError(f"boot: {self.boot!r} is not allowed; use 'hd' or 'cdrom'")
        if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", self.mac):
            raise ValueError(f"mac: {self.mac!r} is not a lower-case MAC like 52:54:00:aa:00:11")
        if (self.disk if self.boot == "hd" else self.cdrom) is None:
            raise ValueError(f"boot: {self.boot!r} needs {'disk' if self.boot == 'hd' else 'cdrom'} to be set")


def domain_xml(spec: GuestSpec) -> str:
    """libvirt domain XML for ``spec`` (type qemu, ACPI, virtio disk + NIC, serial console to a file)."""
    q = quoteattr
    disks = ""
    if spec.disk is not None:
        disks += (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                  f"<source file={q(str(spec.disk))}/><target dev='vda' bus='virtio'/></disk>")
    if spec.cdrom is not None:
        disks += (f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
                  f"<source file={q(str(spec.cdrom))}/><target dev='hdc' bus='ide'/><readonly/></disk>")
    console = q(str(spec.console))
    return f"""<domain type='qemu'>
  <name>{spec.name}</name>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='{spec.boot}'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    {disks}
    <interface type='bridge'><source bridge={q(spec.bridge)}/><mac address='{spec.mac}'/>
      <model type='virtio'/></interface>
    <serial type='file'><source path={console} append='on'/><target port='0'/></serial>
    <console type='file'><source path={console} append='on'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>"""


def make_overlay(base: Path, path: Path) -> Path:
    """Create a qcow2 overlay ``path`` backed by ``base`` (which is never written)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)],
                   check=True, capture_output=True, timeout=60)
    return path


class Guest:
    """A started guest on one testbed host; ``destroy()`` is idempotent and also undefines it."""

    def __init__(self, host: LabHost, spec: GuestSpec, conn: libvirt.virConnect, dom: libvirt.virDomain):
        self.host, self.spec, self.conn, self.dom = host, spec, conn, dom
        self.started_at = time.monotonic()
        self._closed = False

    @property
    def name(self) -> str:
        return self.spec.name

    def console_text(self) -> str:
        try:
            return self.spec.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears on the serial console; AssertionError shows the console."""
        rx = re.compile(pattern)
        try:
            return wait_for(lambda: rx.search(self.console_text()), timeout, f"{pattern!r} on {self.name}")
        except AssertionError as e:
            raise AssertionError(f"{e}; console of {self.name}:\n{self.console_text()[-3000:]}") from None

    def wait_lease(self, timeout: float = 90) -> str:
        """Wait for the guest's ``tiny: LEASE`` console line and return the leased IPv4 address."""
        return self.wait_console(LEASE_RE, timeout).group(1)

    def is_active(self) -> bool:
        return bool(self.dom.isActive())

    def shutdown(self, timeout: float = 30) -> float:
        """ACPI shutdown (libvirt ``shutdown()``, i.e. ``virsh shutdown``); return seconds until powered off."""
        t0 = time.monotonic()
        self.dom.shutdown()
        wait_for(lambda: not self.is_active(), timeout, f"{self.name} to power off", interval=0.02)
        return time.monotonic() - t0

    def destroy(self) -> None:
        """Destroy (if running) and undefine the guest, then close(); a guest already gone is fine."""
        try:
            if self.dom.isActive():
                self.dom.destroy()
            self.dom.undefine()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        finally:
            self.close()

    def close(self) -> None:
        """Drop the libvirt domain and connection (the guest keeps running). Do this before the host goes
        away: freeing them later waits on a TCP connection whose peer vanished without a reset."""
        if self._closed:
            return
        self._closed = True
        del self.dom
        self.conn.close()


def start_guest(host: LabHost, spec: GuestSpec) -> Guest:
    """Define and start ``spec`` on ``host`` through its libvirtd (``qemu+tcp://<ip>/system``).

    The console file is truncated first. If start fails, the definition is removed again."""
    spec.console.write_bytes(b"")
    conn = libvirt.open(host.libvirt_uri)
    dom = conn.defineXML(domain_xml(spec))
    try:
        dom.create()
    except libvirt.libvirtError:
        dom.undefine()
        conn.close()
        raise
    return Guest(host, spec, conn, dom)
