"""Registered system-tag patterns of 1.0, by resource type.

A tag matches a pattern when both split on ``::`` into the same number of segments and every literal
segment is equal; ``{name}`` segments capture values. So a tag value may contain anything (commas,
quotes, ``\\n`` sequences, spaces) except ``::``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TagPattern:
    pattern: str
    resource_types: tuple[str, ...]
    #: created by ZStack itself; API users cannot delete it
    inherent: bool = False

    @property
    def segments(self) -> list[str]:
        return self.pattern.split("::")

    def match(self, tag: str) -> dict[str, str] | None:
        parts = tag.split("::")
        segs = self.segments
        if len(parts) != len(segs):
            return None
        out: dict[str, str] = {}
        for seg, part in zip(segs, parts, strict=True):
            if seg.startswith("{") and seg.endswith("}"):
                out[seg[1:-1]] = part
            elif seg != part:
                return None
        return out

    def key(self) -> str:
        """The literal prefix (``userdata``, ``staticIp``, ``flatNetwork::DhcpServer``)."""
        lits = []
        for s in self.segments:
            if s.startswith("{"):
                break
            lits.append(s)
        return "::".join(lits)


VM = ("VmInstanceVO",)
HOST = ("HostVO", "KVMHostVO")

PATTERNS: list[TagPattern] = [
    TagPattern("userdata::{userdata}", VM),
    TagPattern("sshkey::{sshkey}", VM),
    TagPattern("rootPassword::{rootPassword}", VM),
    TagPattern("hostname::{hostname}", VM),
    TagPattern("staticIp::{l3NetworkUuid}::{staticIp}", VM),
    TagPattern("bootOrder::{bootOrder}", VM),
    TagPattern("iso::{iso}", VM, inherent=True),
    TagPattern("windows::virtioVolume", VM),
    TagPattern("pendingCapacityChange::cpuNum::{cpuNum}::cpuSpeed::{cpuSpeed}::memory::{memory}", VM,
               inherent=True),
    TagPattern("flatNetwork::DhcpServer::{ip}::ipUuid::{ipUuid}", ("L3NetworkVO",), inherent=True),
    TagPattern("kvm::bridge::{name}", ("L2NetworkVO", "L2VlanNetworkVO"), inherent=True),
    TagPattern("os::distribution::{distribution}", HOST, inherent=True),
    TagPattern("os::release::{release}", HOST, inherent=True),
    TagPattern("os::version::{version}", HOST, inherent=True),
    TagPattern("libvirt::version::{version}", HOST, inherent=True),
    TagPattern("qemu-img::version::{version}", HOST, inherent=True),
    TagPattern("qemu::version::{version}", HOST, inherent=True),
    TagPattern("hvm::{flag}", HOST, inherent=True),
    TagPattern("domainType::{type}", HOST, inherent=True),
    TagPattern("capability:virtio-scsi", HOST, inherent=True),
    TagPattern("capability:liveSnapshot", HOST, inherent=True),
    TagPattern("reservedCpu::{capacity}", HOST),
    TagPattern("reservedMemory::{capacity}", HOST),
    # a virtual router offering meant for one guest L3 (reference virtual-router.md §1.1)
    TagPattern("guestL3Network::{guestL3NetworkUuid}", ("InstanceOfferingVO",)),
]


def find_pattern(resource_type: str, tag: str) -> tuple[TagPattern, dict[str, str]] | None:
    for p in PATTERNS:
        if resource_type in p.resource_types:
            m = p.match(tag)
            if m is not None:
                return p, m
    return None
