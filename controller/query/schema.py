"""Declarative description of every queryable resource (ZStack 1.0 ``Query<Name>`` APIs).

A :class:`Resource` says which table (or SQL source) holds the rows, the typed primitive columns that are
both queryable and returned, the columns deliberately never exposed (``hidden``), one-to-many lists that
are embedded in the inventory (``children``) and many-to-one relations that are only queryable (``refs``).

Guarantees relied on by the compiler: every name here is a plain identifier (checked at import), so
quoting it is safe; user-supplied field names are only ever looked up in these tables, never pasted
into SQL. ``tests/unit/test_query_schema.py`` checks every declared column against the migrated schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

ColType = Literal["str", "int", "bool", "date"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Child:
    """A one-to-many list embedded in the parent's inventory and queryable as ``name.<field>``.

    ``resource`` names the child's Resource (its inventory is embedded); ``scalar`` instead names the one
    column whose values form a list of plain values (queryable as ``name``). With ``table`` None the list
    is always empty and not queryable (1.0 fields with no backing rows yet).
    """

    name: str
    table: str | None
    fk: str = ""
    parent_key: str = "uuid"
    resource: str | None = None
    scalar: str | None = None
    order_by: tuple[str, ...] = ()
    #: False: queryable only (``name.<field>`` conditions), never embedded in the inventory
    embed: bool = True


@dataclass(frozen=True)
class Ref:
    """A many-to-one relation: ``column`` of this resource points at ``target_key`` of ``resource``."""

    name: str
    resource: str
    column: str
    target_key: str = "uuid"


@dataclass(frozen=True)
class Resource:
    """One queryable inventory. ``columns`` maps inventory field → type; ``aliases`` maps a field whose
    1.0 name differs from its column to the column; ``base_filter`` is (column, value) for subtypes."""

    name: str
    table: str
    resource_type: str | None
    columns: dict[str, ColType]
    children: tuple[Child, ...] = ()
    refs: tuple[Ref, ...] = ()
    hidden: frozenset[str] = frozenset()
    bools: frozenset[str] = frozenset()
    base_filter: tuple[str, str] | None = None
    key: tuple[str, ...] = ("uuid",)
    aliases: dict[str, str] = field(default_factory=dict)
    union_of: tuple[str, ...] = ()  # tables merged with UNION ALL (QueryTag)
    api: bool = True  # False: only a target of nested conditions, no Query<name> API

    def __post_init__(self) -> None:
        # Columns typed bool are returned as JSON booleans, whether or not listed in ``bools``.
        typed = frozenset(f for f, t in self.columns.items() if t == "bool")
        object.__setattr__(self, "bools", self.bools | typed)

    def column_of(self, field_name: str) -> str:
        """The SQL column behind an inventory field."""
        return self.aliases.get(field_name, field_name)

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def ref(self, name: str) -> Ref | None:
        return next((r for r in self.refs if r.name == name), None)


DATES: dict[str, ColType] = {"createDate": "date", "lastOpDate": "date"}


def _cols(*str_cols: str, ints: tuple[str, ...] = (), bools: tuple[str, ...] = (),
          dates: bool = True) -> dict[str, ColType]:
    out: dict[str, ColType] = dict.fromkeys(str_cols, "str")
    out.update(dict.fromkeys(ints, "int"))
    out.update(dict.fromkeys(bools, "bool"))
    if dates:
        out.update(DATES)
    return out


_ZONE = Ref("zone", "Zone", "zoneUuid")
_HOST = Ref("host", "Host", "hostUuid")
_PS = Ref("primaryStorage", "PrimaryStorage", "primaryStorageUuid")
_L3 = Ref("l3Network", "L3Network", "l3NetworkUuid")
_SIZES = ("totalCapacity", "availableCapacity", "totalPhysicalCapacity", "availablePhysicalCapacity",
          "systemUsedCapacity")

_VM_COLS = _cols("uuid", "name", "description", "zoneUuid", "clusterUuid", "imageUuid", "hostUuid",
                 "lastHostUuid", "instanceOfferingUuid", "rootVolumeUuid", "platform", "defaultL3NetworkUuid",
                 "type", "hypervisorType", "allocatorStrategy", "state",
                 ints=("memorySize", "cpuNum", "cpuSpeed", "internalId"))
#: ApplianceVm / VirtualRouterVm: a VM plus the appliance fields (controller/vrouter_provider)
_APPLIANCE_COLS = {**_VM_COLS, **_cols("applianceVmType", "managementNetworkUuid", "defaultRouteL3NetworkUuid",
                                       "publicNetworkUuid", "status", dates=False)}
_VM_CHILDREN = (
    Child("vmNics", "VmNic", fk="vmInstanceUuid", resource="VmNic", order_by=("deviceId",)),
    Child("allVolumes", "Volume", fk="vmInstanceUuid", resource="Volume", order_by=("deviceId",)),
)
_VM_REFS = (_ZONE, Ref("cluster", "Cluster", "clusterUuid"), _HOST, Ref("lastHost", "Host", "lastHostUuid"),
            Ref("image", "Image", "imageUuid"),
            Ref("instanceOffering", "InstanceOffering", "instanceOfferingUuid"),
            Ref("rootVolume", "Volume", "rootVolumeUuid"),
            Ref("defaultL3Network", "L3Network", "defaultL3NetworkUuid"))

_L2_COLS = _cols("uuid", "name", "description", "zoneUuid", "physicalInterface", "type")
_L2_CHILDREN = (Child("attachedClusterUuids", "L2NetworkClusterRef", fk="l2NetworkUuid", scalar="clusterUuid",
                      order_by=("createDate",)),)
_L2_REFS = (_ZONE,)

_BS_COLS = _cols("uuid", "name", "description", "url", "type", "state", "status", "hostname",
                 "sshHostKeyFingerprint", ints=("totalCapacity", "availableCapacity", "sshPort"))
_BS_CHILDREN = (Child("attachedZoneUuids", "BackupStorageZoneRef", fk="backupStorageUuid", scalar="zoneUuid",
                      order_by=("createDate",)),)
_BS_HIDDEN = frozenset({"username", "password", "sshHostKey"})

_TAG_COLS = _cols("uuid", "resourceUuid", "resourceType", "tag", "type")

_NIC_COLS = _cols("uuid", "vmInstanceUuid", "usedIpUuid", "l3NetworkUuid", "ip", "mac", "netmask", "gateway",
                  "metaData", "internalName", ints=("deviceId",))
_NIC_REFS = (Ref("vmInstance", "VmInstance", "vmInstanceUuid"), _L3, Ref("usedIp", "UsedIp", "usedIpUuid"))
_SG_COLS = _cols("uuid", "name", "description", "state")
_SG = Ref("securityGroup", "SecurityGroup", "securityGroupUuid")
_SECURITY_GROUP_RESOURCES = (
    Resource("SecurityGroup", "SecurityGroup", "SecurityGroupVO", _SG_COLS, children=(
        Child("rules", "SecurityGroupRule", fk="securityGroupUuid", resource="SecurityGroupRule",
              order_by=("createDate",)),
        Child("attachedL3NetworkUuids", "SecurityGroupL3NetworkRef", fk="securityGroupUuid",
              scalar="l3NetworkUuid", order_by=("createDate",)),
        Child("vmNic", "SecurityGroupVmNicView", fk="securityGroupUuid", resource="SecurityGroupVmNic",
              embed=False),
        Child("l3Network", "SecurityGroupL3NetworkView", fk="securityGroupUuid", resource="SecurityGroupL3Network",
              embed=False))),
    Resource("SecurityGroupRule", "SecurityGroupRule", None,
             _cols("uuid", "securityGroupUuid", "type", "protocol", "state", "allowedCidr",
                   "remoteSecurityGroupUuid", ints=("startPort", "endPort")),
             refs=(_SG, Ref("remoteSecurityGroup", "SecurityGroup", "remoteSecurityGroupUuid"))),
    Resource("VmNicInSecurityGroup", "VmNicSecurityGroupRef", None,
             _cols("vmNicUuid", "securityGroupUuid", "vmInstanceUuid"),
             refs=(Ref("vmNic", "VmNic", "vmNicUuid"), _SG, Ref("vmInstance", "VmInstance", "vmInstanceUuid")),
             hidden=frozenset({"uuid"}), key=("vmNicUuid", "securityGroupUuid")),
    Resource("SecurityGroupVmNic", "SecurityGroupVmNicView", None, {**_NIC_COLS, "securityGroupUuid": "str"},
             refs=_NIC_REFS, api=False),
    Resource("SecurityGroupL3Network", "SecurityGroupL3NetworkView", None,
             {**_cols("uuid", "name", "description", "type", "zoneUuid", "l2NetworkUuid", "state", "dnsDomain",
                      bools=("system",)), "securityGroupUuid": "str"},
             refs=(Ref("zone", "Zone", "zoneUuid"), Ref("l2Network", "L2Network", "l2NetworkUuid")), api=False),
    Resource("VmNicSecurityGroup", "VmNicSecurityGroupView", None, {**_SG_COLS, "vmNicUuid": "str"}, api=False),
)

_RESOURCES: tuple[Resource, ...] = (
    Resource("Zone", "Zone", "ZoneVO", _cols("uuid", "name", "description", "state", "type")),
    Resource("Cluster", "Cluster", "ClusterVO",
             _cols("uuid", "name", "description", "state", "hypervisorType", "zoneUuid", "type"),
             refs=(_ZONE,)),
    Resource("Host", "Host", "HostVO",
             _cols("uuid", "name", "description", "zoneUuid", "clusterUuid", "managementIp", "hypervisorType",
                   "state", "status", "username", "sshHostKeyFingerprint", "agentVersion", "agentDigest",
                   ints=("totalCpuCapacity", "availableCpuCapacity", "totalMemoryCapacity",
                         "availableMemoryCapacity", "cpuNum", "sshPort", "agentProtocol"),
                   bools=("agentUpgradeNeeded",)),
             refs=(_ZONE, Ref("cluster", "Cluster", "clusterUuid")),
             hidden=frozenset({"password", "agentToken", "agentBootId", "agentPort", "agentTls", "sshHostKey"})),
    Resource("PrimaryStorage", "PrimaryStorage", "PrimaryStorageVO",
             _cols("uuid", "name", "description", "zoneUuid", "url", "type", "state", "status", "mountPath",
                   ints=_SIZES),
             children=(Child("attachedClusterUuids", "PrimaryStorageClusterRef", fk="primaryStorageUuid",
                             scalar="clusterUuid", order_by=("createDate",)),),
             refs=(_ZONE,)),
    Resource("LocalStorageHostRef", "LocalStorageHostRef", None,
             _cols("uuid", "primaryStorageUuid", "hostUuid",
                   ints=_SIZES),
             refs=(_PS, _HOST),
             key=("primaryStorageUuid", "hostUuid"), aliases={"uuid": "primaryStorageUuid"}),
    Resource("LocalStorageResourceRef", "LocalStorageResourceRef", None,
             _cols("resourceUuid", "primaryStorageUuid", "hostUuid", "resourceType", ints=("size",)),
             refs=(_PS, _HOST),
             key=("resourceUuid",)),
    Resource("BackupStorage", "BackupStorage", "BackupStorageVO", _BS_COLS, children=_BS_CHILDREN,
             hidden=_BS_HIDDEN),
    Resource("SftpBackupStorage", "BackupStorage", "BackupStorageVO", _BS_COLS, children=_BS_CHILDREN,
             hidden=_BS_HIDDEN, base_filter=("type", "SftpBackupStorage")),
    Resource("Image", "Image", "ImageVO",
             _cols("uuid", "name", "description", "state", "status", "md5Sum", "url", "mediaType",
                   "guestOsType", "type", "platform", "format",
                   ints=("size", "actualSize", "downloadProgress"), bools=("system",)),
             children=(Child("backupStorageRefs", "ImageBackupStorageRef", fk="imageUuid",
                             resource="ImageBackupStorageRef", order_by=("id",)),)),
    Resource("ImageBackupStorageRef", "ImageBackupStorageRef", None,
             _cols("imageUuid", "backupStorageUuid", "installPath", "status", ints=("id",)),
             refs=(Ref("image", "Image", "imageUuid"),
                   Ref("backupStorage", "BackupStorage", "backupStorageUuid")),
             key=("id",)),
    Resource("InstanceOffering", "InstanceOffering", "InstanceOfferingVO",
             _cols("uuid", "name", "description", "type", "allocatorStrategy", "state",
                   ints=("cpuNum", "cpuSpeed", "memorySize", "sortKey"))),
    Resource("DiskOffering", "DiskOffering", "DiskOfferingVO",
             _cols("uuid", "name", "description", "state", "type", "allocatorStrategy",
                   ints=("diskSize", "sortKey"))),
    Resource("L2Network", "L2Network", "L2NetworkVO", _L2_COLS, children=_L2_CHILDREN, refs=_L2_REFS,
             hidden=frozenset({"vlan"})),
    Resource("L2NoVlanNetwork", "L2Network", "L2NetworkVO", _L2_COLS, children=_L2_CHILDREN, refs=_L2_REFS,
             hidden=frozenset({"vlan"}), base_filter=("type", "L2NoVlanNetwork")),
    Resource("L2VlanNetwork", "L2Network", "L2NetworkVO", {**_L2_COLS, "vlan": "int"}, children=_L2_CHILDREN,
             refs=_L2_REFS, base_filter=("type", "L2VlanNetwork")),
    Resource("L3Network", "L3Network", "L3NetworkVO",
             _cols("uuid", "name", "description", "type", "zoneUuid", "l2NetworkUuid", "state", "dnsDomain",
                   bools=("system",)),
             children=(
                 Child("dns", "L3NetworkDns", fk="l3NetworkUuid", scalar="dns", order_by=("position",)),
                 Child("ipRanges", "IpRange", fk="l3NetworkUuid", resource="IpRange",
                       order_by=("createDate",)),
                 Child("networkServices", "NetworkServiceL3NetworkRef", fk="l3NetworkUuid",
                       resource="NetworkServiceL3NetworkRef", order_by=("networkServiceType",)),
             ),
             refs=(Ref("zone", "Zone", "zoneUuid"), Ref("l2Network", "L2Network", "l2NetworkUuid"))),
    Resource("IpRange", "IpRange", "IpRangeVO",
             _cols("uuid", "name", "description", "l3NetworkUuid", "startIp", "endIp", "netmask", "gateway",
                   "networkCidr"),
             refs=(_L3,), hidden=frozenset({"startInt", "endInt"})),
    Resource("UsedIp", "UsedIp", None,
             _cols("uuid", "ipRangeUuid", "l3NetworkUuid", "ip", "gateway", "netmask", "usedFor",
                   ints=("ipInLong",)),
             refs=(_L3, Ref("ipRange", "IpRange", "ipRangeUuid"))),
    Resource("NetworkServiceProvider", "NetworkServiceProvider", "NetworkServiceProviderVO",
             _cols("uuid", "name", "description", "type"),
             children=(
                 Child("networkServiceTypes", "NetworkServiceType", fk="networkServiceProviderUuid",
                       scalar="type", order_by=("type",)),
                 Child("attachedL2NetworkUuids", "NetworkServiceProviderL2NetworkRef",
                       fk="networkServiceProviderUuid", scalar="l2NetworkUuid", order_by=("l2NetworkUuid",)),
             )),
    Resource("NetworkServiceL3NetworkRef", "NetworkServiceL3NetworkRef", None,
             _cols("l3NetworkUuid", "networkServiceProviderUuid", "networkServiceType", dates=False),
             refs=(_L3, Ref("networkServiceProvider", "NetworkServiceProvider",
                            "networkServiceProviderUuid")),
             key=("l3NetworkUuid", "networkServiceType")),
    Resource("VmInstance", "VmInstance", "VmInstanceVO", _VM_COLS, children=_VM_CHILDREN, refs=_VM_REFS),
    Resource("ApplianceVm", "ApplianceVmView", "VmInstanceVO", _APPLIANCE_COLS, children=_VM_CHILDREN,
             refs=_VM_REFS, base_filter=("type", "ApplianceVm")),
    Resource("VirtualRouterVm", "ApplianceVmView", "VmInstanceVO", _APPLIANCE_COLS, children=_VM_CHILDREN,
             refs=_VM_REFS, base_filter=("type", "ApplianceVm")),
    Resource("Vip", "Vip", "VipVO",
             _cols("uuid", "name", "description", "l3NetworkUuid", "ipRangeUuid", "ip", "gateway", "netmask",
                   "state", "serviceProvider", "peerL3NetworkUuid", "useFor"),
             refs=(_L3,), hidden=frozenset({"usedIpUuid"})),
    Resource("Eip", "Eip", "EipVO",
             _cols("uuid", "name", "description", "vipUuid", "vmNicUuid", "state", "vipIp", "guestIp"),
             refs=(Ref("vip", "Vip", "vipUuid"), Ref("vmNic", "VmNic", "vmNicUuid"))),
    Resource("PortForwardingRule", "PortForwardingRule", "PortForwardingRuleVO",
             _cols("uuid", "name", "description", "vipUuid", "vmNicUuid", "vipIp", "guestIp", "protocolType",
                   "state", "allowedCidr",
                   ints=("vipPortStart", "vipPortEnd", "privatePortStart", "privatePortEnd")),
             refs=(Ref("vip", "Vip", "vipUuid"), Ref("vmNic", "VmNic", "vmNicUuid"))),
    Resource("VirtualRouterOffering", "VirtualRouterOfferingView", "InstanceOfferingVO",
             _cols("uuid", "name", "description", "type", "allocatorStrategy", "state", "zoneUuid",
                   "managementNetworkUuid", "publicNetworkUuid", "imageUuid",
                   ints=("cpuNum", "cpuSpeed", "memorySize", "sortKey"), bools=("isDefault",)),
             refs=(_ZONE, Ref("image", "Image", "imageUuid"),
                   Ref("managementL3Network", "L3Network", "managementNetworkUuid"),
                   Ref("publicL3Network", "L3Network", "publicNetworkUuid"))),
    Resource("VmNic", "VmNic", None, _NIC_COLS, refs=_NIC_REFS,
             children=(Child("securityGroup", "VmNicSecurityGroupView", fk="vmNicUuid",
                             resource="VmNicSecurityGroup", embed=False),)),
    *_SECURITY_GROUP_RESOURCES,
    Resource("Volume", "Volume", "VolumeVO",
             _cols("uuid", "name", "description", "primaryStorageUuid", "vmInstanceUuid", "diskOfferingUuid",
                   "rootImageUuid", "installPath", "type", "format", "state", "status",
                   ints=("size", "actualSize", "deviceId")),
             refs=(Ref("vmInstance", "VmInstance", "vmInstanceUuid"),
                   _PS, Ref("diskOffering", "DiskOffering", "diskOfferingUuid"),
                   Ref("image", "Image", "rootImageUuid"))),
    Resource("VolumeSnapshot", "VolumeSnapshot", "VolumeSnapshotVO",
             _cols("uuid", "name", "description", "type", "volumeUuid", "treeUuid", "parentUuid",
                   "primaryStorageUuid", "primaryStorageInstallPath", "volumeType", "format", "state",
                   "status", ints=("size",), bools=("latest",)),
             children=(Child("backupStorageRefs", None),),
             refs=(Ref("volume", "Volume", "volumeUuid"), _PS)),
    Resource("VolumeSnapshotTree", "VolumeSnapshotTree", "VolumeSnapshotTreeVO",
             _cols("uuid", "volumeUuid", bools=("current",)),
             refs=(Ref("volume", "Volume", "volumeUuid"),)),
    Resource("SystemTag", "SystemTag", None, {**_TAG_COLS, "inherent": "bool"}),
    Resource("UserTag", "UserTag", None, _TAG_COLS),
    Resource("Tag", "Tag", None, _TAG_COLS, union_of=("SystemTag", "UserTag")),
    Resource("GlobalConfig", "GlobalConfig", None,
             _cols("category", "name", "value", "defaultValue", "description", dates=False),
             key=("category", "name")),
    Resource("Account", "Account", "AccountVO", _cols("uuid", "name", "type", "description"),
             hidden=frozenset({"passwordHash"})),
    Resource("Session", "Session", None,
             {**_cols("uuid", "accountUuid", "userUuid", dates=False),
              "expiredDate": "date", "createDate": "date"},
             refs=(Ref("account", "Account", "accountUuid"),)),
)

RESOURCES: dict[str, Resource] = {r.name: r for r in _RESOURCES}


def resource(name: str) -> Resource:
    """The Resource called ``name``; KeyError for an unknown one (a programming error, not user input)."""
    return RESOURCES[name]


def query_api_names() -> dict[str, str]:
    """API name → resource name for every query API (``QueryVmInstance`` → ``VmInstance``)."""
    return {f"Query{name}": name for name, r in RESOURCES.items() if r.api}


def _check_identifiers() -> None:
    """Every name that reaches SQL must be a plain identifier: enforce it once, at import."""
    for r in _RESOURCES:
        names = [r.table, *r.columns, *r.hidden, *r.key, *r.aliases.values(), *r.union_of]
        for c in r.children:
            names += [c.name, *(n for n in (c.table, c.fk, c.parent_key, c.scalar) if n), *c.order_by]
        for ref in r.refs:
            names += [ref.name, ref.column, ref.target_key]
        if r.base_filter:
            names.append(r.base_filter[0])
        bad = [n for n in names if not _IDENT.fullmatch(n)]
        if bad:
            raise ValueError(f"resource {r.name}: names {bad} are not plain SQL identifiers")


_check_identifiers()
