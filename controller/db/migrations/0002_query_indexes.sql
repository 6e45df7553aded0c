-- Indexes for common queries and relation look-ups not covered by 0001 (owned by the query engine).
-- Each one serves a Query* condition, a nested-field subquery or a foreign key's ON DELETE action, so
-- none of them makes SQLite scan a large table.

-- QueryVmInstance zoneUuid=/imageUuid=, QueryApplianceVm / QueryVirtualRouterVm (type='ApplianceVm').
CREATE INDEX IF NOT EXISTS VmInstance_zone ON VmInstance(zoneUuid);
CREATE INDEX IF NOT EXISTS VmInstance_image ON VmInstance(imageUuid);
CREATE INDEX IF NOT EXISTS VmInstance_type ON VmInstance(type);
CREATE INDEX IF NOT EXISTS VmInstance_rootVolume ON VmInstance(rootVolumeUuid);
-- VmNic.usedIpUuid: ON DELETE SET NULL from UsedIp, and vmNics.usedIpUuid= conditions.
CREATE INDEX IF NOT EXISTS VmNic_usedIp ON VmNic(usedIpUuid);
-- Name look-ups used by nested conditions such as host.name=, vmNics.l3Network.name=, l2Network.name=.
CREATE INDEX IF NOT EXISTS Host_name ON Host(name);
CREATE INDEX IF NOT EXISTS L2Network_name ON L2Network(name);
CREATE INDEX IF NOT EXISTS L2Network_type ON L2Network(type);
CREATE INDEX IF NOT EXISTS L3Network_name ON L3Network(name);
CREATE INDEX IF NOT EXISTS Volume_name ON Volume(name);
CREATE INDEX IF NOT EXISTS Volume_rootImage ON Volume(rootImageUuid);
CREATE INDEX IF NOT EXISTS VolumeSnapshot_ps ON VolumeSnapshot(primaryStorageUuid);
-- ON DELETE CASCADE from PrimaryStorage, and QueryLocalStorageResourceRef primaryStorageUuid=.
CREATE INDEX IF NOT EXISTS LocalStorageResourceRef_ps ON LocalStorageResourceRef(primaryStorageUuid);
-- QueryUsedIp ip=, vmNics.usedIp.ip=.
CREATE INDEX IF NOT EXISTS UsedIp_ip ON UsedIp(ip);
