"""Database → the rule set of a host (``kvmagent.contract.secgroup``) and the hosts a change affects. Read-only.

What a host enforces (decisions, reference §3/§4 and its defects):

* A NIC is filtered on a host iff its VM is on that host in a state where it runs or is about to
  (:data:`ACTIVE`), it is a member of at least one group, that group is attached to the NIC's L3, and the L3
  has the ``SecurityGroup`` network service (1.0 checked the service only at VM start; here every path
  agrees). Membership of a group not attached to the NIC's L3 cannot be created (AddVmNicToSecurityGroup
  refuses it, DetachSecurityGroupFromL3Network removes it).
* The NIC gets the union of its groups' rules. A rule's peers are ``allowedCidr``, plus, when that is not
  ``0.0.0.0/0``, the IPs of the group's members on the NIC's L3 (1.0's intra-group exemption, stopped
  members included as in 1.0); a rule with ``remoteSecurityGroupUuid`` admits the members of that group (any
  L3) instead.
* Defaults: global configs ``securityGroup/ingress.defaultPolicy`` (deny) and ``egress.defaultPolicy``
  (accept), applied by the agent only to a direction without rules.
* The host's flat DHCP/metadata address of the NIC's L3 is always reachable, and anti-spoofing follows the
  flat provider's setting of the L3.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controller.core import Controller
from controller.flatnet_provider.dhcpserver import current_dhcp_ip
from controller.flatnet_provider.specs import anti_spoofing
from kvmagent.contract.secgroup import SecurityGroupNicTO, SecurityGroupRuleTO

ACTIVE = ("Starting", "Running", "Unknown", "Rebooting", "Stopping", "Migrating")
_ACTIVE_SQL = ", ".join(f"'{s}'" for s in ACTIVE)
ANY = "0.0.0.0/0"


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


async def host_nics(core: Controller, host_uuid: str, *, include_vm: str | None = None,
                    exclude_vm: str | None = None) -> list[dict[str, Any]]:
    """The filtered NICs of ``host_uuid`` (rows of VmNic). ``include_vm`` counts that VM as running there
    (it is starting on the host), ``exclude_vm`` drops it (it stopped or is going away)."""
    rows = await core.db.fetchall(
        "SELECT DISTINCT n.* FROM VmNic n JOIN VmInstance v ON v.uuid = n.vmInstanceUuid "
        "JOIN VmNicSecurityGroupRef m ON m.vmNicUuid = n.uuid "
        "JOIN SecurityGroupL3NetworkRef a ON a.securityGroupUuid = m.securityGroupUuid "
        "AND a.l3NetworkUuid = n.l3NetworkUuid "
        "JOIN NetworkServiceL3NetworkRef s ON s.l3NetworkUuid = n.l3NetworkUuid "
        "AND s.networkServiceType = 'SecurityGroup' "
        f"WHERE ((v.hostUuid = ? AND v.state IN ({_ACTIVE_SQL})) OR v.uuid = ?) AND n.ip IS NOT NULL "
        "AND v.uuid IS NOT ? ORDER BY n.internalName", (host_uuid, include_vm, exclude_vm))
    return [dict(r) for r in rows]


async def _member_ips(core: Controller, group_uuids: Iterable[str], l3_uuid: str | None = None) -> dict[str, list[str]]:
    groups = sorted(set(group_uuids))
    if not groups:
        return {}
    sql = ("SELECT m.securityGroupUuid, n.ip FROM VmNicSecurityGroupRef m JOIN VmNic n ON n.uuid = m.vmNicUuid "
           f"JOIN VmInstance v ON v.uuid = m.vmInstanceUuid WHERE m.securityGroupUuid IN ({_marks(len(groups))}) "
           "AND n.ip IS NOT NULL AND v.state NOT IN ('Destroyed', 'Expunging', 'Destroying')")
    args: list[Any] = list(groups)
    if l3_uuid is not None:
        sql += " AND n.l3NetworkUuid = ?"
        args.append(l3_uuid)
    out: dict[str, list[str]] = {}
    for r in await core.db.fetchall(sql + " ORDER BY n.ip", args):
        out.setdefault(r[0], []).append(r[1])
    return out


async def nic_to(core: Controller, nic: dict[str, Any]) -> SecurityGroupNicTO:
    """The rule set of one filtered NIC."""
    l3 = nic["l3NetworkUuid"]
    groups = [r[0] for r in await core.db.fetchall(
        "SELECT m.securityGroupUuid FROM VmNicSecurityGroupRef m JOIN SecurityGroupL3NetworkRef a ON "
        "a.securityGroupUuid = m.securityGroupUuid AND a.l3NetworkUuid = ? WHERE m.vmNicUuid = ? "
        "ORDER BY m.createDate", (l3, nic["uuid"]))]
    rules = [dict(r) for r in await core.db.fetchall(
        f"SELECT * FROM SecurityGroupRule WHERE securityGroupUuid IN ({_marks(len(groups))}) "
        "ORDER BY createDate, rowid", groups)] if groups else []
    peers = await _member_ips(core, groups, l3)
    remote = await _member_ips(core, (r["remoteSecurityGroupUuid"] for r in rules if r["remoteSecurityGroupUuid"]))
    tos = []
    for r in rules:
        if r["remoteSecurityGroupUuid"]:
            addresses = remote.get(r["remoteSecurityGroupUuid"], [])
        else:
            cidr = r["allowedCidr"] or ANY
            addresses = [cidr] + (peers.get(r["securityGroupUuid"], []) if cidr != ANY else [])
        tos.append(SecurityGroupRuleTO(type=r["type"], protocol=r["protocol"], startPort=r["startPort"],
                                       endPort=r["endPort"], addresses=addresses))
    configs = core.services["configs"]
    dhcp = await current_dhcp_ip(core, l3)
    return SecurityGroupNicTO(
        vmNicUuid=nic["uuid"], vmInstanceUuid=nic["vmInstanceUuid"], internalName=nic["internalName"],
        mac=nic["mac"], ips=[nic["ip"]], rules=tos, antiSpoofing=await anti_spoofing(core, l3),
        ingressDefaultPolicy=configs.get("securityGroup", "ingress.defaultPolicy"),
        egressDefaultPolicy=configs.get("securityGroup", "egress.defaultPolicy"),
        hostServiceIps=[dhcp["ip"]] if dhcp else [])


async def host_rule_set(core: Controller, host_uuid: str, **kw: Any) -> list[SecurityGroupNicTO]:
    """Every filtered NIC of the host with its rules (what ``/securitygroup/apply`` carries)."""
    return [await nic_to(core, n) for n in await host_nics(core, host_uuid, **kw)]


async def groups_depending_on(core: Controller, group_uuids: Iterable[str]) -> set[str]:
    """``group_uuids`` plus the groups with a rule whose remote group is one of them."""
    groups = set(group_uuids)
    if not groups:
        return groups
    rows = await core.db.fetchall("SELECT DISTINCT securityGroupUuid FROM SecurityGroupRule WHERE "
                                  f"remoteSecurityGroupUuid IN ({_marks(len(groups))})", sorted(groups))
    return groups | {r[0] for r in rows}


async def hosts_of_groups(core: Controller, group_uuids: Iterable[str]) -> set[str]:
    """Hosts running a member NIC of any of the groups."""
    groups = sorted(set(group_uuids))
    if not groups:
        return set()
    rows = await core.db.fetchall(
        "SELECT DISTINCT v.hostUuid FROM VmNicSecurityGroupRef m JOIN VmInstance v ON v.uuid = m.vmInstanceUuid "
        f"WHERE m.securityGroupUuid IN ({_marks(len(groups))}) AND v.hostUuid IS NOT NULL "
        f"AND v.state IN ({_ACTIVE_SQL})", groups)
    return {r[0] for r in rows}


async def hosts_of_membership_change(core: Controller, group_uuids: Iterable[str]) -> set[str]:
    """Hosts to push after the membership of the groups changed: their members' hosts (same-L3 peer lists)
    and the hosts of groups that name them as remote group."""
    return await hosts_of_groups(core, await groups_depending_on(core, group_uuids))


async def hosts_of_l3(core: Controller, l3_uuid: str) -> set[str]:
    rows = await core.db.fetchall(
        "SELECT DISTINCT v.hostUuid FROM VmNic n JOIN VmInstance v ON v.uuid = n.vmInstanceUuid "
        f"WHERE n.l3NetworkUuid = ? AND v.hostUuid IS NOT NULL AND v.state IN ({_ACTIVE_SQL})", (l3_uuid,))
    return {r[0] for r in rows}
