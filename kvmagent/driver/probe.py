"""Deciding the domain type: ``kvm`` only where KVM really works, else ``qemu`` (TCG).

Both must hold for ``kvm``: the CPU advertises ``vmx``/``svm`` in /proc/cpuinfo (ZStack 1.0's ``hvm`` fact)
AND libvirt's capabilities list domain type ``kvm`` for x86_64 guests. On the project's build machine
``/dev/kvm`` exists and libvirt lists ``kvm`` but the CPU flags are missing and KVM guests crash, so the
probe must (and does) choose ``qemu``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

DOMAIN_TYPES = ("auto", "kvm", "qemu")


def hvm_flag(cpuinfo: str) -> str | None:
    """``vmx`` or ``svm`` when any CPU's ``flags`` line carries it, else None."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            for flag in ("vmx", "svm"):
                if flag in flags:
                    return flag
    return None


def caps_have_kvm(capabilities_xml: str) -> bool:
    caps = ET.fromstring(capabilities_xml)
    for guest in caps.findall("guest"):
        if guest.findtext("os_type") != "hvm":
            continue
        for arch in guest.findall("arch"):
            if arch.get("name") == "x86_64" and arch.find("domain[@type='kvm']") is not None:
                return True
    return False


def choose_domain_type(configured: str, flag: str | None, kvm_in_caps: bool) -> str:
    """The configured type unless ``auto``; ``auto`` → ``kvm`` iff both probes agree."""
    if configured not in DOMAIN_TYPES:
        raise ValueError(f"domain_type {configured!r} is not one of {', '.join(DOMAIN_TYPES)}")
    if configured != "auto":
        return configured
    return "kvm" if flag and kvm_in_caps else "qemu"
