"""Host facts and capacity, read in ONE worker-thread hop each (blocking functions over a connection)."""

from __future__ import annotations

import libvirt

from kvmagent.driver.base import Capacity, HostFacts


def version_string(v: int) -> str:
    """libvirt encodes versions as major*1e6 + minor*1e3 + micro."""
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


#: ZStack 1.0's condition for ``capability:liveSnapshot`` (libvirt >= 1.0.0, QEMU >= 1.3.0).
MIN_LIVE_SNAPSHOT_LIBVIRT = 1_000_000
MIN_LIVE_SNAPSHOT_QEMU = 1_003_000


def live_snapshot_capable(hypervisor: str, libvirt_version: int, hypervisor_version: int) -> bool:
    """External disk-only snapshots work on the QEMU backend only (the test driver refuses the flags)."""
    return (hypervisor == "QEMU" and libvirt_version >= MIN_LIVE_SNAPSHOT_LIBVIRT
            and hypervisor_version >= MIN_LIVE_SNAPSHOT_QEMU)


def read_facts(conn: libvirt.virConnect, *, hvm_flag: str | None, domain_type: str) -> HostFacts:
    model, mem_mib, cpus, mhz = conn.getInfo()[:4]
    lib, hv, kind = conn.getLibVersion(), conn.getVersion(), conn.getType()
    return HostFacts(cpu_num=int(cpus), cpu_mhz=int(mhz), cpu_model=str(model),
                     memory_bytes=int(mem_mib) << 20,
                     libvirt_version=version_string(lib),
                     qemu_version=version_string(hv), hvm_flag=hvm_flag,
                     domain_type=domain_type, hypervisor=kind,
                     live_snapshot=live_snapshot_capable(kind, lib, hv))


def read_capacity(conn: libvirt.virConnect) -> Capacity:
    _model, mem_mib, cpus, mhz = conn.getInfo()[:4]
    used_cpu = used_kib = 0
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            info = dom.info()
        except libvirt.libvirtError:
            continue  # stopped between the listing and the read: not using anything any more
        used_kib += int(info[1])
        used_cpu += int(info[3])
    return Capacity(cpu_num=int(cpus), cpu_speed_mhz=int(mhz), used_cpu=used_cpu,
                    total_memory_bytes=int(mem_mib) << 20, used_memory_bytes=used_kib * 1024)


def read_states(conn: libvirt.virConnect) -> list[tuple[str, int]]:
    """``(name, libvirt state)`` of every domain; domains vanishing meanwhile are skipped."""
    out = []
    for dom in conn.listAllDomains(0):
        try:
            out.append((dom.name(), int(dom.state()[0])))
        except libvirt.libvirtError:
            continue
    return out
