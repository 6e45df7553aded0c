"""The one table of resource descriptions the console's list, detail and action pages are generated from.

Each :class:`Res` names its ``Query*`` API (lists and details go through the query engine via the API
dispatcher), its columns, filters, sort keys, and the actions the API allows (with the states that allow
them and whether they are destructive). VM actions take their allowed states from the VM state machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.compute import statemachine as sm
from controller.ui.i18n import N_

Inv = dict[str, Any]


@dataclass(frozen=True)
class Col:
    field: str
    label: str
    kind: str = "text"  # text | state | size | date | number | uuid | bool | mhz (ports are text: no 2,222)
    sortable: bool = True


@dataclass(frozen=True)
class Action:
    id: str
    label: str
    api: str
    params: Callable[[Inv], dict[str, Any]]
    when: Callable[[Inv], bool] = lambda inv: True
    destructive: bool = False
    #: extra user input: (field name, label, input type) — sent as API parameters. Types: an HTML input type
    #: (``text``), ``select:A,B,...`` (fixed choices), ``number:LO:HI`` (a whole number in [LO, HI], sent as a
    #: number) or ``pick:NAME`` (a list of the resources the API offers for this one, from
    #: :data:`controller.ui.pickers.PICKERS`)
    inputs: tuple[tuple[str, str, str], ...] = ()
    #: inputs that may be left empty (the others are required)
    optional: tuple[str, ...] = ()
    #: turns the body (params plus the inputs given) into the API's parameters, when they are not flat
    build: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass(frozen=True)
class Res:
    slug: str
    label: str
    query: str
    columns: tuple[Col, ...]
    key: tuple[str, ...] = ("uuid",)
    name_field: str | None = "name"
    state_field: str | None = "state"
    states: tuple[str, ...] = ()
    zone_field: str | None = None
    default_sort: str = "createDate"
    actions: tuple[Action, ...] = ()
    group: str = N_("Resources")
    #: the forms that create one (``/ui/r/<slug>/new/<action id>``): ``params`` gets ``{}``
    creates: tuple[Action, ...] = ()
    #: which live feed event updates this resource's state (and status) cells: ``vm`` (VmInstance rows) or
    #: ``res`` (the tables of :data:`controller.ui.live.RES_CHANGES`)
    live: str | None = None
    #: the list filters on user tags (``__userTag__``): every resource with a uuid
    taggable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def key_of(self, inv: Inv) -> str:
        return ":".join(str(inv.get(k, "")) for k in self.key)

    def key_conditions(self, key: str) -> list[dict[str, Any]]:
        parts = key.split(":", len(self.key) - 1)
        if len(parts) != len(self.key):
            parts += [""] * (len(self.key) - len(parts))
        return [{"name": k, "op": "=", "value": v} for k, v in zip(self.key, parts, strict=True)]

    def action(self, action_id: str) -> Action | None:
        return next((a for a in self.actions if a.id == action_id), None)

    def create(self, action_id: str) -> Action | None:
        return next((a for a in self.creates if a.id == action_id), None)

    @property
    def bulk_actions(self) -> tuple[Action, ...]:
        """Actions that need no extra input can run on several selected rows at once."""
        return tuple(a for a in self.actions if not a.inputs)


def _uuid(inv: Inv) -> dict[str, Any]:
    return {"uuid": inv["uuid"]}


def _state_actions(api: str) -> tuple[Action, ...]:
    return (
        Action("enable", N_("Enable"), api, lambda inv: {"uuid": inv["uuid"], "stateEvent": "enable"},
               when=lambda inv: inv.get("state") != "Enabled"),
        Action("disable", N_("Disable"), api, lambda inv: {"uuid": inv["uuid"], "stateEvent": "disable"},
               when=lambda inv: inv.get("state") == "Enabled"),
    )


def _delete(api: str) -> Action:
    return Action("delete", N_("Delete"), api, _uuid, destructive=True)


def _vm(api: str) -> Callable[[Inv], bool]:
    allowed = sm.ALLOWED[api]
    return lambda inv: inv.get("state") in allowed


NAME = Col("name", N_("Name"))
UUID = Col("uuid", N_("UUID"), "uuid")
STATE = Col("state", N_("State"), "state")
STATUS = Col("status", N_("Status"), "state")
CREATED = Col("createDate", N_("Created"), "date")
EN_DIS = ("Enabled", "Disabled")

VM_ACTIONS: tuple[Action, ...] = (
    Action("start", N_("Start"), "StartVmInstance", _uuid, when=_vm("StartVmInstance")),
    Action("stop", N_("Stop"), "StopVmInstance", _uuid, when=_vm("StopVmInstance")),
    Action("reboot", N_("Reboot"), "RebootVmInstance", _uuid, when=_vm("RebootVmInstance")),
    Action("migrate", N_("Migrate"), "MigrateVm", lambda inv: {"vmInstanceUuid": inv["uuid"]},
           when=_vm("MigrateVm"),
           inputs=(("hostUuid", N_("Destination host (empty: the controller chooses)"), "pick:migration-hosts"),),
           optional=("hostUuid",)),
    Action("destroy", N_("Destroy"), "DestroyVmInstance", _uuid, when=_vm("DestroyVmInstance"), destructive=True),
    Action("recover", N_("Recover"), "RecoverVmInstance", _uuid, when=_vm("RecoverVmInstance")),
    Action("expunge", N_("Expunge"), "ExpungeVmInstance", _uuid, when=_vm("ExpungeVmInstance"), destructive=True),
    Action("attach-iso", N_("Attach ISO"), "AttachIsoToVmInstance",
           lambda inv: {"vmInstanceUuid": inv["uuid"]}, when=_vm("AttachIsoToVmInstance"),
           inputs=(("isoUuid", N_("ISO image UUID"), "text"),)),
    Action("detach-iso", N_("Detach ISO"), "DetachIsoFromVmInstance",
           lambda inv: {"vmInstanceUuid": inv["uuid"]}, when=_vm("DetachIsoFromVmInstance")),
)

def _rule_body(body: dict[str, Any]) -> dict[str, Any]:
    """AddSecurityGroupRule takes a list of rules: the form's fields make one (ports as numbers when they are;
    anything else goes to the API as given, which names the field and the value it refuses)."""
    rule: dict[str, Any] = {}
    for name in ("type", "protocol", "startPort", "endPort", "allowedCidr", "remoteSecurityGroupUuid"):
        if name in body:
            value = body.pop(name)
            if name.endswith("Port") and re.fullmatch(r"-?[0-9]{1,6}", value):
                value = int(value)
            rule[name] = value
    return {**body, "rules": [rule]}


def _list_of(name: str, to: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def build(body: dict[str, Any]) -> dict[str, Any]:
        if name in body:
            body[to] = [body.pop(name)]
        return body
    return build


def _sg(inv: Inv) -> dict[str, Any]:
    return {"securityGroupUuid": inv["uuid"]}


SG_ACTIONS: tuple[Action, ...] = (
    Action("update", N_("Update"), "UpdateSecurityGroup", _uuid,
           inputs=(("name", N_("Name"), "text"), ("description", N_("Description"), "text")),
           optional=("name", "description")),
    *_state_actions("ChangeSecurityGroupState"),
    Action("add-rule", N_("Add rule"), "AddSecurityGroupRule", _sg,
           inputs=(("type", N_("Rule type (Ingress or Egress)"), "select:Ingress,Egress"),
                   ("protocol", N_("Protocol (TCP, UDP, ICMP or ALL)"), "select:TCP,UDP,ICMP,ALL"),
                   ("startPort", N_("Start port"), "text"), ("endPort", N_("End port"), "text"),
                   ("allowedCidr", N_("Allowed CIDR"), "text"),
                   ("remoteSecurityGroupUuid", N_("Remote security group UUID"), "text")),
           optional=("startPort", "endPort", "allowedCidr", "remoteSecurityGroupUuid"), build=_rule_body),
    Action("delete-rule", N_("Delete rule"), "DeleteSecurityGroupRule", lambda inv: {},
           inputs=(("ruleUuid", N_("Rule UUID"), "text"),), build=_list_of("ruleUuid", "ruleUuids")),
    Action("attach-l3", N_("Attach L3 network"), "AttachSecurityGroupToL3Network", _sg,
           inputs=(("l3NetworkUuid", N_("L3 network UUID"), "text"),)),
    Action("detach-l3", N_("Detach L3 network"), "DetachSecurityGroupFromL3Network", _sg,
           inputs=(("l3NetworkUuid", N_("L3 network UUID"), "text"),)),
    Action("add-nic", N_("Add VM NIC"), "AddVmNicToSecurityGroup", _sg,
           inputs=(("vmNicUuid", N_("VM NIC UUID"), "text"),), build=_list_of("vmNicUuid", "vmNicUuids")),
    Action("remove-nic", N_("Remove VM NIC"), "DeleteVmNicFromSecurityGroup", _sg,
           inputs=(("vmNicUuid", N_("VM NIC UUID"), "text"),), build=_list_of("vmNicUuid", "vmNicUuids")),
    _delete("DeleteSecurityGroup"),
)

def _update(api: str) -> Action:
    return Action("update", N_("Update"), api, _uuid,
                  inputs=(("name", N_("Name"), "text"), ("description", N_("Description"), "text")),
                  optional=("name", "description"))


NAME_DESC: tuple[tuple[str, str, str], ...] = (("name", N_("Name"), "text"),
                                               ("description", N_("Description"), "text"))
PORT = "number:1:65535"
MiB = 1 << 20


def _mib(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The form asks for MiB, the API takes bytes (a value that is not a whole number goes as given: the API
    names the field and the value it refuses)."""
    def build(body: dict[str, Any]) -> dict[str, Any]:
        if isinstance(body.get(name), int):
            body[name] = body[name] * MiB
        return body
    return build


def _nic_free(inv: Inv) -> bool:
    return not inv.get("vmNicUuid")


HOST_ACTIONS: tuple[Action, ...] = (
    *_state_actions("ChangeHostState"),
    Action("maintain", N_("Maintenance mode"), "ChangeHostState",
           lambda inv: {"uuid": inv["uuid"], "stateEvent": "maintain"},
           when=lambda inv: inv.get("state") in ("Enabled", "Disabled"), destructive=True),
    Action("reconnect", N_("Reconnect"), "ReconnectHost", _uuid,
           when=lambda inv: inv.get("state") not in ("PreMaintenance", "Maintenance")),
    _delete("DeleteHost"),
)

PS_ACTIONS: tuple[Action, ...] = (
    _update("UpdatePrimaryStorage"),
    *_state_actions("ChangePrimaryStorageState"),
    Action("maintain", N_("Maintenance mode"), "ChangePrimaryStorageState",
           lambda inv: {"uuid": inv["uuid"], "stateEvent": "maintain"},
           when=lambda inv: inv.get("state") != "Maintenance", destructive=True),
    Action("attach-cluster", N_("Attach to a cluster"), "AttachPrimaryStorageToCluster",
           lambda inv: {"primaryStorageUuid": inv["uuid"]},
           inputs=(("clusterUuid", N_("Cluster"), "pick:ps-attachable-clusters"),)),
    Action("detach-cluster", N_("Detach from a cluster"), "DetachPrimaryStorageFromCluster",
           lambda inv: {"primaryStorageUuid": inv["uuid"]},
           when=lambda inv: bool(inv.get("attachedClusterUuids")),
           inputs=(("clusterUuid", N_("Cluster"), "pick:ps-attached-clusters"),), destructive=True),
    Action("reconnect", N_("Reconnect"), "ReconnectPrimaryStorage", _uuid),
    _delete("DeletePrimaryStorage"),
)

PS_CREATES: tuple[Action, ...] = (
    Action("nfs", N_("Add NFS primary storage"), "AddNfsPrimaryStorage", lambda inv: {},
           inputs=(*NAME_DESC, ("zoneUuid", N_("Zone"), "pick:zones"),
                   ("url", N_("NFS URL (server:/exported/path, e.g. 192.168.0.5:/exports/ps)"), "text")),
           optional=("description",)),
    Action("smp", N_("Add SharedMountPoint primary storage"), "AddSharedMountPointPrimaryStorage",
           lambda inv: {},
           inputs=(*NAME_DESC, ("zoneUuid", N_("Zone"), "pick:zones"),
                   ("url", N_("Mount point (an absolute path mounted on every host, e.g. /mnt/shared)"), "text")),
           optional=("description",)),
    Action("local", N_("Add local primary storage"), "AddLocalPrimaryStorage", lambda inv: {},
           inputs=(*NAME_DESC, ("zoneUuid", N_("Zone"), "pick:zones"),
                   ("url", N_("Directory on every host (an absolute path)"), "text")),
           optional=("description",)),
)

VR_OFFERING_ACTIONS: tuple[Action, ...] = (
    Action("update", N_("Update"), "UpdateVirtualRouterOffering", _uuid,
           inputs=(*NAME_DESC, ("imageUuid", N_("Router image"), "pick:images"),
                   ("isDefault", N_("Default offering of its zone"), "select:,true,false")),
           optional=("name", "description", "imageUuid", "isDefault")),
    *_state_actions("ChangeInstanceOfferingState"),
    _delete("DeleteInstanceOffering"),
)

VR_OFFERING_CREATES: tuple[Action, ...] = (
    Action("offering", N_("New virtual router offering"), "CreateVirtualRouterOffering", lambda inv: {},
           inputs=(*NAME_DESC, ("zoneUuid", N_("Zone"), "pick:zones"),
                   ("cpuNum", N_("CPUs"), "number:1:1024"), ("cpuSpeed", N_("CPU speed (MHz)"), "number:1:1000000"),
                   ("memorySize", N_("Memory (MiB)"), "number:1:16777216"),
                   ("managementNetworkUuid", N_("Management L3 network"), "pick:l3-networks"),
                   ("publicNetworkUuid", N_("Public L3 network (empty: the management network)"),
                    "pick:l3-networks"),
                   ("imageUuid", N_("Router image"), "pick:images"),
                   ("isDefault", N_("Default offering of its zone"), "select:false,true")),
           optional=("description", "publicNetworkUuid"), build=_mib("memorySize")),
)

ROUTER_ACTIONS: tuple[Action, ...] = (
    Action("reconnect", N_("Reconnect"), "ReconnectVirtualRouter", lambda inv: {"vmInstanceUuid": inv["uuid"]},
           when=lambda inv: inv.get("state") == "Running"),
    Action("start", N_("Start"), "StartVmInstance", _uuid, when=_vm("StartVmInstance")),
    Action("stop", N_("Stop"), "StopVmInstance", _uuid, when=_vm("StopVmInstance"), destructive=True),
    Action("reboot", N_("Reboot"), "RebootVmInstance", _uuid, when=_vm("RebootVmInstance"), destructive=True),
    Action("migrate", N_("Migrate"), "MigrateVm", lambda inv: {"vmInstanceUuid": inv["uuid"]},
           when=_vm("MigrateVm"),
           inputs=(("hostUuid", N_("Destination host (empty: the controller chooses)"), "pick:migration-hosts"),),
           optional=("hostUuid",)),
    Action("destroy", N_("Destroy"), "DestroyVmInstance", _uuid, when=_vm("DestroyVmInstance"), destructive=True),
)

VIP_ACTIONS: tuple[Action, ...] = (
    _update("UpdateVip"),
    *_state_actions("ChangeVipState"),
    _delete("DeleteVip"),
)

VIP_CREATES: tuple[Action, ...] = (
    Action("vip", N_("New VIP"), "CreateVip", lambda inv: {},
           inputs=(*NAME_DESC, ("l3NetworkUuid", N_("L3 network"), "pick:l3-networks"),
                   ("requiredIp", N_("IP address (empty: the next free one)"), "text")),
           optional=("description", "requiredIp")),
)

EIP_ACTIONS: tuple[Action, ...] = (
    Action("attach", N_("Attach to a VM NIC"), "AttachEip", lambda inv: {"eipUuid": inv["uuid"]},
           when=_nic_free, inputs=(("vmNicUuid", N_("VM NIC"), "pick:eip-nics"),)),
    Action("detach", N_("Detach from its VM NIC"), "DetachEip", _uuid,
           when=lambda inv: not _nic_free(inv), destructive=True),
    _update("UpdateEip"),
    *_state_actions("ChangeEipState"),
    _delete("DeleteEip"),
)

EIP_CREATES: tuple[Action, ...] = (
    Action("eip", N_("New EIP"), "CreateEip", lambda inv: {},
           inputs=(*NAME_DESC, ("vipUuid", N_("VIP"), "pick:free-vips"),
                   ("vmNicUuid", N_("VM NIC (empty: attach later)"), "pick:eip-create-nics")),
           optional=("description", "vmNicUuid")),
)

PF_ACTIONS: tuple[Action, ...] = (
    Action("attach", N_("Attach to a VM NIC"), "AttachPortForwardingRule", lambda inv: {"ruleUuid": inv["uuid"]},
           when=lambda inv: _nic_free(inv) and inv.get("state") == "Enabled",
           inputs=(("vmNicUuid", N_("VM NIC"), "pick:pf-nics"),)),
    Action("detach", N_("Detach from its VM NIC"), "DetachPortForwardingRule", _uuid,
           when=lambda inv: not _nic_free(inv), destructive=True),
    _update("UpdatePortForwardingRule"),
    *_state_actions("ChangePortForwardingRuleState"),
    _delete("DeletePortForwardingRule"),
)

PF_CREATES: tuple[Action, ...] = (
    Action("rule", N_("New port forwarding rule"), "CreatePortForwardingRule", lambda inv: {},
           inputs=(*NAME_DESC, ("vipUuid", N_("VIP"), "pick:pf-vips"),
                   ("protocolType", N_("Protocol"), "select:TCP,UDP"),
                   ("vipPortStart", N_("VIP start port"), PORT),
                   ("vipPortEnd", N_("VIP end port (empty: the start port)"), PORT),
                   ("privatePortStart", N_("Guest start port (empty: the VIP start port)"), PORT),
                   ("privatePortEnd", N_("Guest end port (empty: start + the VIP range's size)"), PORT),
                   ("allowedCidr", N_("Allowed source CIDR (empty: any, e.g. 203.0.113.0/24)"), "text"),
                   ("vmNicUuid", N_("VM NIC (empty: attach later)"), "pick:pf-create-nics")),
           optional=("description", "vipPortEnd", "privatePortStart", "privatePortEnd", "allowedCidr",
                     "vmNicUuid")),
)

RESOURCES: tuple[Res, ...] = (
    Res("zones", N_("Zones"), "QueryZone", (NAME, STATE, UUID, CREATED), states=EN_DIS,
        actions=(*_state_actions("ChangeZoneState"), _delete("DeleteZone")), group=N_("Infrastructure")),
    Res("clusters", N_("Clusters"), "QueryCluster",
        (NAME, STATE, Col("hypervisorType", N_("Hypervisor")), UUID, CREATED), states=EN_DIS,
        zone_field="zoneUuid", actions=(*_state_actions("ChangeClusterState"), _delete("DeleteCluster")),
        group=N_("Infrastructure")),
    Res("hosts", N_("Hosts"), "QueryHost",
        (NAME, Col("managementIp", N_("Management IP")), STATE, STATUS,
         Col("availableCpuCapacity", N_("Free CPU (MHz)"), "number"),
         Col("availableMemoryCapacity", N_("Free memory"), "size"), CREATED),
        states=("Enabled", "Disabled", "Maintenance", "PreMaintenance"), zone_field="zoneUuid",
        actions=HOST_ACTIONS, live="res",
        group=N_("Infrastructure")),
    Res("primary-storage", N_("Primary storage"), "QueryPrimaryStorage",
        (NAME, Col("type", N_("Type")), STATE, STATUS, Col("totalCapacity", N_("Total"), "size"),
         Col("availableCapacity", N_("Available"), "size"), CREATED),
        states=(*EN_DIS, "Maintenance"), zone_field="zoneUuid",
        actions=PS_ACTIONS, creates=PS_CREATES, group=N_("Storage"), live="res"),
    Res("backup-storage", N_("Backup storage"), "QueryBackupStorage",
        (NAME, Col("hostname", N_("Host name")), STATE, STATUS, Col("totalCapacity", N_("Total"), "size"),
         Col("availableCapacity", N_("Available"), "size"), CREATED),
        states=EN_DIS,
        actions=(*_state_actions("ChangeBackupStorageState"),
                 Action("reconnect", N_("Reconnect"), "ReconnectBackupStorage", _uuid),
                 _delete("DeleteBackupStorage")),
        group=N_("Storage")),
    Res("images", N_("Images"), "QueryImage",
        (NAME, Col("mediaType", N_("Media type")), Col("format", N_("Format")), STATE, STATUS,
         Col("size", N_("Size"), "size"), CREATED),
        states=EN_DIS,
        actions=(*_state_actions("ChangeImageState"),
                 Action("delete", N_("Delete"), "DeleteImage", _uuid, destructive=True,
                        when=lambda inv: inv.get("status") != "Deleted"),
                 Action("recover", N_("Recover"), "RecoverImage", lambda inv: {"imageUuid": inv["uuid"]},
                        when=lambda inv: inv.get("status") == "Deleted"),
                 Action("expunge", N_("Expunge"), "ExpungeImage", lambda inv: {"imageUuid": inv["uuid"]},
                        when=lambda inv: inv.get("status") == "Deleted", destructive=True)),
        group=N_("Storage")),
    Res("instance-offerings", N_("Instance offerings"), "QueryInstanceOffering",
        (NAME, Col("cpuNum", N_("CPUs"), "number"), Col("cpuSpeed", N_("CPU speed (MHz)"), "number"),
         Col("memorySize", N_("Memory"), "size"), STATE, CREATED),
        states=EN_DIS,
        actions=(*_state_actions("ChangeInstanceOfferingState"), _delete("DeleteInstanceOffering")),
        group=N_("Configuration")),
    Res("disk-offerings", N_("Disk offerings"), "QueryDiskOffering",
        (NAME, Col("diskSize", N_("Disk size"), "size"), STATE, CREATED), states=EN_DIS,
        actions=(*_state_actions("ChangeDiskOfferingState"), _delete("DeleteDiskOffering")),
        group=N_("Configuration")),
    Res("l2-networks", N_("L2 networks"), "QueryL2Network",
        (NAME, Col("type", N_("Type")), Col("physicalInterface", N_("Physical interface")), UUID, CREATED),
        state_field=None, zone_field="zoneUuid", actions=(_delete("DeleteL2Network"),), group=N_("Network")),
    Res("l3-networks", N_("L3 networks"), "QueryL3Network",
        (NAME, Col("type", N_("Type")), STATE, Col("dnsDomain", N_("DNS domain")), UUID, CREATED),
        states=EN_DIS, zone_field="zoneUuid",
        actions=(*_state_actions("ChangeL3NetworkState"), _delete("DeleteL3Network")), group=N_("Network")),
    Res("ip-ranges", N_("IP ranges"), "QueryIpRange",
        (NAME, Col("startIp", N_("Start IP")), Col("endIp", N_("End IP")), Col("netmask", N_("Netmask")),
         Col("gateway", N_("Gateway")), Col("l3NetworkUuid", N_("L3 network"), "uuid"), CREATED),
        state_field=None, actions=(_delete("DeleteIpRange"),), group=N_("Network")),
    Res("security-groups", N_("Security groups"), "QuerySecurityGroup",
        (NAME, STATE, Col("description", N_("Description")), UUID, CREATED), states=EN_DIS,
        actions=SG_ACTIONS, group=N_("Network")),
    Res("vips", N_("VIPs"), "QueryVip",
        (NAME, Col("ip", N_("IP address")), Col("useFor", N_("Used for")), STATE,
         Col("l3NetworkUuid", N_("L3 network"), "uuid"), Col("peerL3NetworkUuid", N_("Guest L3 network"), "uuid"),
         CREATED),
        states=EN_DIS, actions=VIP_ACTIONS, creates=VIP_CREATES, group=N_("Network services"),
        live="res"),
    Res("eips", N_("EIPs"), "QueryEip",
        (NAME, Col("vipIp", N_("VIP address")), Col("guestIp", N_("Guest IP")), STATE,
         Col("vmNicUuid", N_("VM NIC"), "uuid"), CREATED),
        states=EN_DIS, actions=EIP_ACTIONS, creates=EIP_CREATES, group=N_("Network services"),
        live="res"),
    Res("port-forwarding", N_("Port forwarding"), "QueryPortForwardingRule",
        (NAME, Col("protocolType", N_("Protocol")), Col("vipIp", N_("VIP address")),
         Col("vipPortStart", N_("VIP start port")), Col("vipPortEnd", N_("VIP end port")),
         Col("guestIp", N_("Guest IP")), Col("privatePortStart", N_("Guest start port")),
         Col("privatePortEnd", N_("Guest end port")), Col("allowedCidr", N_("Allowed CIDR")), STATE,
         CREATED),
        states=EN_DIS, actions=PF_ACTIONS, creates=PF_CREATES, group=N_("Network services"),
        live="res"),
    Res("virtual-routers", N_("Virtual routers"), "QueryVirtualRouterVm",
        (NAME, STATE, STATUS, Col("hostUuid", N_("Host"), "uuid"),
         Col("managementNetworkUuid", N_("Management L3 network"), "uuid"),
         Col("publicNetworkUuid", N_("Public L3 network"), "uuid"), UUID, CREATED),
        states=("Created", "Starting", "Running", "Stopping", "Stopped", "Rebooting", "Migrating", "Unknown",
                "Destroying", "Destroyed", "Error"),
        zone_field="zoneUuid", actions=ROUTER_ACTIONS, group=N_("Network services"), live="vm"),
    Res("virtual-router-offerings", N_("Virtual router offerings"), "QueryVirtualRouterOffering",
        (NAME, Col("cpuNum", N_("CPUs"), "number"), Col("memorySize", N_("Memory"), "size"),
         Col("isDefault", N_("Default")), STATE, Col("imageUuid", N_("Router image"), "uuid"), CREATED),
        states=EN_DIS, zone_field="zoneUuid", actions=VR_OFFERING_ACTIONS, creates=VR_OFFERING_CREATES,
        group=N_("Network services")),
    Res("vms", N_("VM instances"), "QueryVmInstance",
        (NAME, STATE, Col("cpuNum", N_("CPUs"), "number"), Col("memorySize", N_("Memory"), "size"),
         Col("hostUuid", N_("Host"), "uuid"), UUID, CREATED),
        states=("Created", "Starting", "Running", "Stopping", "Stopped", "Rebooting", "Migrating", "Unknown",
                "Destroying", "Destroyed", "Expunging", "Error"),
        zone_field="zoneUuid", actions=VM_ACTIONS, group=N_("Compute"), live="vm"),
    Res("volumes", N_("Volumes"), "QueryVolume",
        (NAME, Col("type", N_("Type")), STATE, STATUS, Col("size", N_("Size"), "size"),
         Col("vmInstanceUuid", N_("VM instance"), "uuid"), CREATED),
        states=EN_DIS,
        actions=(Action("snapshot", N_("Take snapshot"), "CreateVolumeSnapshot",
                        lambda inv: {"volumeUuid": inv["uuid"]}, when=lambda inv: inv.get("status") == "Ready",
                        inputs=(("name", N_("Snapshot name"), "text"),)),
                 Action("attach", N_("Attach to a VM"), "AttachDataVolumeToVm",
                        lambda inv: {"volumeUuid": inv["uuid"]},
                        when=lambda inv: inv.get("type") == "Data" and not inv.get("vmInstanceUuid")
                        and inv.get("status") != "Deleted",
                        inputs=(("vmInstanceUuid", N_("VM instance UUID"), "text"),)),
                 Action("detach", N_("Detach from its VM"), "DetachDataVolumeFromVm", _uuid,
                        when=lambda inv: inv.get("type") == "Data" and bool(inv.get("vmInstanceUuid"))),
                 Action("migrate", N_("Migrate to another host"), "LocalStorageMigrateVolume",
                        lambda inv: {"volumeUuid": inv["uuid"]}, when=lambda inv: inv.get("status") == "Ready",
                        inputs=(("destHostUuid", N_("Destination host UUID"), "text"),)),
                 Action("delete", N_("Delete"), "DeleteDataVolume", _uuid, destructive=True,
                        when=lambda inv: inv.get("type") == "Data" and inv.get("status") != "Deleted"),
                 Action("recover", N_("Recover"), "RecoverDataVolume", _uuid,
                        when=lambda inv: inv.get("status") == "Deleted"),
                 Action("expunge", N_("Expunge"), "ExpungeDataVolume", _uuid, destructive=True,
                        when=lambda inv: inv.get("status") == "Deleted")),
        group=N_("Storage")),
    Res("snapshots", N_("Volume snapshots"), "QueryVolumeSnapshot",
        (NAME, Col("volumeUuid", N_("Volume"), "uuid"), STATE, STATUS, Col("size", N_("Size"), "size"),
         CREATED),
        states=EN_DIS,
        actions=(Action("revert", N_("Revert volume"), "RevertVolumeFromSnapshot", _uuid, destructive=True),
                 _delete("DeleteVolumeSnapshot")),
        group=N_("Storage")),
    Res("global-configs", N_("Global configs"), "QueryGlobalConfig",
        (Col("category", N_("Category")), NAME, Col("value", N_("Value")),
         Col("defaultValue", N_("Default value")), Col("description", N_("Description"), sortable=False)),
        key=("category", "name"), state_field=None, default_sort="category", taggable=False,
        actions=(Action("update", N_("Update value"), "UpdateGlobalConfig",
                        lambda inv: {"category": inv["category"], "name": inv["name"]},
                        inputs=(("value", N_("New value"), "text"),)),),
        group=N_("Configuration")),
    Res("system-tags", N_("System tags"), "QuerySystemTag",
        (Col("tag", N_("Tag")), Col("resourceType", N_("Resource type")),
         Col("resourceUuid", N_("Resource"), "uuid"), CREATED),
        name_field="tag", state_field=None, actions=(_delete("DeleteTag"),), group=N_("Configuration"),
        taggable=False),
    Res("user-tags", N_("User tags"), "QueryUserTag",
        (Col("tag", N_("Tag")), Col("resourceType", N_("Resource type")),
         Col("resourceUuid", N_("Resource"), "uuid"), CREATED),
        name_field="tag", state_field=None, actions=(_delete("DeleteTag"),), group=N_("Configuration"),
        taggable=False),
)

BY_SLUG: dict[str, Res] = {r.slug: r for r in RESOURCES}
GROUPS: tuple[str, ...] = (N_("Compute"), N_("Infrastructure"), N_("Storage"), N_("Network"),
                           N_("Network services"), N_("Configuration"))

#: states shown with their words (never by colour only); translated where shown
STATE_WORDS: tuple[str, ...] = (
    N_("Enabled"), N_("Disabled"), N_("Maintenance"), N_("PreMaintenance"), N_("Connected"),
    N_("Connecting"), N_("Disconnected"), N_("Created"), N_("Starting"), N_("Running"), N_("Stopping"),
    N_("Stopped"), N_("Rebooting"), N_("Migrating"), N_("Unknown"), N_("Destroying"), N_("Destroyed"),
    N_("Expunging"), N_("Error"), N_("Ready"), N_("Deleted"), N_("Downloading"), N_("Creating"),
    N_("Processing"), N_("Succeeded"), N_("Failed"), N_("NotInstantiated"))
