"""Database → wire models of the flat provider (``kvmagent.contract.flatnet``). Read-only.

Guarantees:

* A NIC is served by the flat DHCP iff its L3 has the ``DHCP`` service from the ``Flat`` provider; a VM gets
  user data/metadata iff its DEFAULT L3 has the ``Userdata`` service from ``Flat``. The two are independent
  (an L3 may take DHCP from Flat and SNAT/EIP from VirtualRouter).
* A VM with several L3s gets the same metadata on each of its other L3s with Flat DHCP and Userdata
  (``addresses``): every such L3's DHCP reply routes 169.254.169.254 through its own DHCP server (option
  121), and a guest uses whichever route/lease it meets first (the first NIC's, lower metric; CloudStack's
  datasource reads any lease), so serving it on one L3 only left the guest a 404. Routing the metadata
  address through the default L3 only would fix the EC2 path but not the CloudStack path (the DHCP server of
  whichever lease it reads), hence metadata on every Userdata L3. Without Flat DHCP (or with anti-spoofing
  off) the agent refuses to serve user data: the source address could not be trusted (OSSN-0074).
* Hostname (default-L3 NIC only, as 1.0's hosts.dhcp): the VM's ``hostname::`` tag, else its name made
  DNS-safe; ``<hostname>.<dnsDomain>`` when the L3 has a dnsDomain. Every path (start, tracer, reconnect)
  builds it here, so it is never lost on reconnect or migration (1.0's defect).
* ``tapName`` is the NIC's ``internalName`` (``vnic<internalId>.<deviceId>``), which is also the agent's
  ``<target dev>`` (``kvmagent.contract.names.nic_tap_name``).
* Anti-spoofing: global config ``flatNetwork/antiSpoofing`` (default true), overridden per L3 by the system tag
  ``flatNetwork::antiSpoofing::true|false`` on the L3 network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from controller.compute.connect import l2_bridge
from controller.core import Controller
from controller.flatnet_provider.dhcpserver import ensure_dhcp_ip
from kvmagent.contract.flatnet import FlatAddress, FlatL3, FlatNic, FlatUserdataApplyCmd

ANTI_SPOOFING_TAG = "flatNetwork::antiSpoofing::"


async def flat_services(core: Controller, l3_uuid: str) -> set[str]:
    """Service types the Flat provider gives ``l3_uuid`` (subset of {DHCP, Userdata})."""
    rows = await core.db.fetchall(
        "SELECT r.networkServiceType FROM NetworkServiceL3NetworkRef r JOIN NetworkServiceProvider p "
        "ON p.uuid = r.networkServiceProviderUuid WHERE r.l3NetworkUuid=? AND p.type='Flat'", (l3_uuid,))
    return {r[0] for r in rows}


def dns_safe(name: str) -> str:
    """A DNS label from a VM name: lower case, runs of other characters → '-', at most 63 characters."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label or "vm"


async def hostname_of(core: Controller, vm: dict[str, Any], dns_domain: str | None) -> str:
    tagged = await core.services["tags"].values(vm["uuid"], "hostname")
    name = tagged[-1][1]["hostname"] if tagged else dns_safe(vm["name"])
    if dns_domain and not name.endswith("." + dns_domain):
        name = f"{name}.{dns_domain}"
    return name


async def anti_spoofing(core: Controller, l3_uuid: str) -> bool:
    tagged = await core.services["tags"].values(l3_uuid, "flatNetwork::antiSpoofing")
    if tagged:
        return tagged[-1][1]["enabled"] == "true"
    return bool(core.services["configs"].get_bool("flatNetwork", "antiSpoofing"))


async def l3_spec(core: Controller, l3_uuid: str) -> FlatL3:
    """The L3's namespace spec; allocates its DHCP server IP on first use."""
    dhcp = await ensure_dhcp_ip(core, l3_uuid)
    row = await core.db.fetchone(
        "SELECT l3.dnsDomain, l2.uuid AS l2Uuid, l2.physicalInterface, l2.vlan, "
        "(SELECT tag FROM SystemTag WHERE resourceUuid = l2.uuid AND tag LIKE 'kvm::bridge::%' LIMIT 1) AS tag "
        "FROM L3Network l3 JOIN L2Network l2 ON l2.uuid = l3.l2NetworkUuid WHERE l3.uuid=?", (l3_uuid,))
    if row is None:
        raise LookupError(f"L3 network[uuid:{l3_uuid}] no longer exists")
    dns = [r[0] for r in await core.db.fetchall(
        "SELECT dns FROM L3NetworkDns WHERE l3NetworkUuid=? ORDER BY position", (l3_uuid,))]
    return FlatL3(l3NetworkUuid=l3_uuid, bridgeName=l2_bridge(dict(row)), physicalInterface=row["physicalInterface"],
                  dhcpServerIp=dhcp["ip"], netmask=dhcp["netmask"], gateway=dhcp["gateway"], dns=dns,
                  dnsDomain=row["dnsDomain"] or None, antiSpoofing=await anti_spoofing(core, l3_uuid))


@dataclass
class VmPlan:
    """What one VM needs from the flat provider on its host."""

    vm: dict[str, Any]
    l3s: dict[str, FlatL3] = field(default_factory=dict)
    nics: list[FlatNic] = field(default_factory=list)
    userdata: FlatUserdataApplyCmd | None = None

    @property
    def empty(self) -> bool:
        return not self.l3s


async def _nic_rows(core: Controller, vm_uuid: str) -> list[dict[str, Any]]:
    rows = await core.db.fetchall(
        "SELECT n.l3NetworkUuid, n.mac, n.ip, n.netmask, n.gateway, n.internalName, l3.dnsDomain FROM VmNic n "
        "JOIN L3Network l3 ON l3.uuid = n.l3NetworkUuid WHERE n.vmInstanceUuid=? AND n.ip IS NOT NULL "
        "ORDER BY n.deviceId", (vm_uuid,))
    return [dict(r) for r in rows]


async def vm_plan(core: Controller, vm: dict[str, Any], cache: dict[str, FlatL3] | None = None) -> VmPlan:
    """DhcpInfo of the VM's NICs on Flat-DHCP L3s and its user data when its default L3 has Flat Userdata.
    ``cache`` (L3 uuid → spec) is shared between the VMs of one rebuild."""
    cache = {} if cache is None else cache
    plan = VmPlan(vm)
    if vm.get("type") == "ApplianceVm":  # a virtual router configures itself and forwards others' addresses:
        return plan                       # no lease, no user data, no anti-spoofing on its taps
    also: list[FlatAddress] = []
    for n in await _nic_rows(core, vm["uuid"]):
        services = await flat_services(core, n["l3NetworkUuid"])
        default = n["l3NetworkUuid"] == vm["defaultL3NetworkUuid"]
        wants_userdata = default and "Userdata" in services
        if "DHCP" not in services and not wants_userdata:
            continue
        if not default and {"DHCP", "Userdata"} <= services:
            also.append(FlatAddress(l3NetworkUuid=n["l3NetworkUuid"], ip=n["ip"]))
        l3 = cache.get(n["l3NetworkUuid"]) or await l3_spec(core, n["l3NetworkUuid"])
        cache[l3.l3NetworkUuid] = plan.l3s[l3.l3NetworkUuid] = l3
        hostname = await hostname_of(core, vm, n["dnsDomain"]) if default else None
        if "DHCP" in services:
            plan.nics.append(FlatNic(vmUuid=vm["uuid"], l3NetworkUuid=l3.l3NetworkUuid, mac=n["mac"], ip=n["ip"],
                                     netmask=n["netmask"] or l3.netmask, gateway=n["gateway"], hostname=hostname,
                                     isDefaultL3Network=default, tapName=n["internalName"]))
        if wants_userdata:
            plan.userdata = await userdata_cmd(core, vm, l3.l3NetworkUuid, n["ip"], hostname)
    if plan.userdata is not None:
        plan.userdata.addresses = also
    return plan


async def userdata_cmd(core: Controller, vm: dict[str, Any], l3_uuid: str, ip: str,
                       hostname: str | None) -> FlatUserdataApplyCmd:
    tags = core.services["tags"]
    userdata = [v["userdata"] for _, v in await tags.values(vm["uuid"], "userdata")]
    keys = [v["sshkey"] for _, v in await tags.values(vm["uuid"], "sshkey")]
    pw = [v["rootPassword"] for _, v in await tags.values(vm["uuid"], "rootPassword")]
    offering = await core.db.fetchone("SELECT name FROM InstanceOffering WHERE uuid=?",
                                      (vm.get("instanceOfferingUuid"),))
    zone = await core.db.fetchone("SELECT name FROM Zone WHERE uuid=?", (vm.get("zoneUuid"),))
    return FlatUserdataApplyCmd(vmUuid=vm["uuid"], l3NetworkUuid=l3_uuid, vmIp=ip,
                                userdata=userdata[-1] if userdata else None, sshKeys=keys,
                                rootPassword=pw[-1] if pw else None, hostname=hostname, instanceId=vm["uuid"],
                                serviceOffering=offering["name"] if offering else None,
                                availabilityZone=zone["name"] if zone else None)
