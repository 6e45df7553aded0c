-- The VirtualRouter provider (controller/vrouter_provider): offerings (an InstanceOffering of type
-- VirtualRouter plus these fields), appliance VMs (a VmInstance of type ApplianceVm plus these fields; the
-- agent token never leaves this table), and the inventories' views.
CREATE TABLE VirtualRouterOffering (
    uuid TEXT PRIMARY KEY REFERENCES InstanceOffering(uuid) ON DELETE CASCADE,
    zoneUuid TEXT NOT NULL REFERENCES Zone(uuid) ON DELETE CASCADE,
    managementNetworkUuid TEXT NOT NULL REFERENCES L3Network(uuid) ON DELETE CASCADE,
    publicNetworkUuid TEXT NOT NULL REFERENCES L3Network(uuid) ON DELETE CASCADE,
    imageUuid TEXT NOT NULL REFERENCES Image(uuid) ON DELETE CASCADE,
    isDefault INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX VirtualRouterOffering_zone ON VirtualRouterOffering(zoneUuid);
-- deleting the offering's L3s or image deletes the offering (1.0's VirtualRouterOfferingCascadeExtension)
CREATE TRIGGER VirtualRouterOffering_cascade AFTER DELETE ON VirtualRouterOffering
BEGIN DELETE FROM InstanceOffering WHERE uuid = OLD.uuid; END;
CREATE VIEW VirtualRouterOfferingView AS
    SELECT o.*, v.zoneUuid, v.managementNetworkUuid, v.publicNetworkUuid, v.imageUuid, v.isDefault
    FROM InstanceOffering o JOIN VirtualRouterOffering v ON v.uuid = o.uuid;

CREATE TABLE ApplianceVm (
    uuid TEXT PRIMARY KEY REFERENCES VmInstance(uuid) ON DELETE CASCADE,
    applianceVmType TEXT NOT NULL,
    managementNetworkUuid TEXT, defaultRouteL3NetworkUuid TEXT, publicNetworkUuid TEXT,
    guestL3NetworkUuid TEXT,
    status TEXT NOT NULL DEFAULT 'Connecting',
    agentToken TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    agentVersion TEXT
);
-- one router per guest L3
CREATE UNIQUE INDEX ApplianceVm_guest ON ApplianceVm(guestL3NetworkUuid);
CREATE VIEW ApplianceVmView AS
    SELECT v.*, a.applianceVmType, a.managementNetworkUuid, a.defaultRouteL3NetworkUuid, a.publicNetworkUuid,
           a.status
    FROM VmInstance v LEFT JOIN ApplianceVm a ON a.uuid = v.uuid;

-- VIP and EIP (reference virtual-router.md §2): a VIP holds an address of its L3 (a UsedIp); useFor locks it to
-- one service, peerL3NetworkUuid to one guest L3. An EIP maps a VIP to a VM NIC (vmNicUuid NULL: detached).
CREATE TABLE Vip (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    l3NetworkUuid TEXT NOT NULL REFERENCES L3Network(uuid) ON DELETE CASCADE,
    ipRangeUuid TEXT, usedIpUuid TEXT REFERENCES UsedIp(uuid) ON DELETE SET NULL,
    ip TEXT NOT NULL, gateway TEXT, netmask TEXT,
    state TEXT NOT NULL DEFAULT 'Enabled', serviceProvider TEXT, peerL3NetworkUuid TEXT, useFor TEXT,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX Vip_l3 ON Vip(l3NetworkUuid);
CREATE TABLE Eip (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    vipUuid TEXT NOT NULL REFERENCES Vip(uuid) ON DELETE CASCADE,
    vmNicUuid TEXT UNIQUE REFERENCES VmNic(uuid) ON DELETE SET NULL,
    state TEXT NOT NULL DEFAULT 'Enabled', vipIp TEXT NOT NULL, guestIp TEXT,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX Eip_vip ON Eip(vipUuid);
