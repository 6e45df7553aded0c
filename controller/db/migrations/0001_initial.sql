-- ZStack-Py controller schema, version 1.
-- Column names are the inventory field names of ZStack 1.0 (camelCase), so the query engine maps
-- `QueryVmInstance state=Running` to `VmInstance.state` without a translation table.
-- Dates are ISO 8601 UTC strings ('2026-01-30T15:01:03.123Z'), which sort as text.
-- Tags are polymorphic (resourceUuid + resourceType) and are removed by the triggers at the end.

CREATE TABLE Account (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, passwordHash TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'Normal', description TEXT,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);

CREATE TABLE Session (
    uuid TEXT PRIMARY KEY,
    accountUuid TEXT NOT NULL REFERENCES Account(uuid) ON DELETE CASCADE,
    userUuid TEXT NOT NULL, expiredDate TEXT NOT NULL, createDate TEXT NOT NULL
);
CREATE INDEX Session_account ON Session(accountUuid);
CREATE INDEX Session_expired ON Session(expiredDate);

CREATE TABLE GlobalConfig (
    category TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, defaultValue TEXT NOT NULL,
    description TEXT, PRIMARY KEY (category, name)
);

CREATE TABLE SystemTag (
    uuid TEXT PRIMARY KEY, resourceUuid TEXT NOT NULL, resourceType TEXT NOT NULL, tag TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'System', inherent INTEGER NOT NULL DEFAULT 0,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX SystemTag_resource ON SystemTag(resourceUuid);
CREATE INDEX SystemTag_tag ON SystemTag(tag);

CREATE TABLE UserTag (
    uuid TEXT PRIMARY KEY, resourceUuid TEXT NOT NULL, resourceType TEXT NOT NULL, tag TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'User', createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX UserTag_resource ON UserTag(resourceUuid);
CREATE INDEX UserTag_tag ON UserTag(tag);

CREATE TABLE Zone (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    state TEXT NOT NULL DEFAULT 'Enabled', type TEXT NOT NULL DEFAULT 'zstack',
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX Zone_name ON Zone(name);

CREATE TABLE Cluster (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    state TEXT NOT NULL DEFAULT 'Enabled', hypervisorType TEXT NOT NULL,
    zoneUuid TEXT NOT NULL REFERENCES Zone(uuid) ON DELETE CASCADE,
    type TEXT NOT NULL DEFAULT 'zstack', createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX Cluster_zone ON Cluster(zoneUuid);
CREATE INDEX Cluster_name ON Cluster(name);

CREATE TABLE Host (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    zoneUuid TEXT NOT NULL REFERENCES Zone(uuid) ON DELETE CASCADE,
    clusterUuid TEXT NOT NULL REFERENCES Cluster(uuid) ON DELETE CASCADE,
    managementIp TEXT NOT NULL UNIQUE, hypervisorType TEXT NOT NULL DEFAULT 'KVM',
    state TEXT NOT NULL DEFAULT 'Enabled', status TEXT NOT NULL DEFAULT 'Connecting',
    totalCpuCapacity INTEGER NOT NULL DEFAULT 0, availableCpuCapacity INTEGER NOT NULL DEFAULT 0,
    totalMemoryCapacity INTEGER NOT NULL DEFAULT 0, availableMemoryCapacity INTEGER NOT NULL DEFAULT 0,
    cpuNum INTEGER NOT NULL DEFAULT 0,
    username TEXT, password TEXT, sshPort INTEGER NOT NULL DEFAULT 22,
    agentPort INTEGER NOT NULL DEFAULT 7070, agentToken TEXT, agentBootId TEXT,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX Host_cluster ON Host(clusterUuid);
CREATE INDEX Host_zone ON Host(zoneUuid);
CREATE INDEX Host_status ON Host(status);

CREATE TABLE PrimaryStorage (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    zoneUuid TEXT NOT NULL REFERENCES Zone(uuid) ON DELETE CASCADE,
    url TEXT NOT NULL, type TEXT NOT NULL,
    totalCapacity INTEGER NOT NULL DEFAULT 0, availableCapacity INTEGER NOT NULL DEFAULT 0,
    totalPhysicalCapacity INTEGER NOT NULL DEFAULT 0, availablePhysicalCapacity INTEGER NOT NULL DEFAULT 0,
    systemUsedCapacity INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'Enabled', status TEXT NOT NULL DEFAULT 'Connected', mountPath TEXT,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX PrimaryStorage_zone ON PrimaryStorage(zoneUuid);

CREATE TABLE PrimaryStorageClusterRef (
    primaryStorageUuid TEXT NOT NULL REFERENCES PrimaryStorage(uuid) ON DELETE CASCADE,
    clusterUuid TEXT NOT NULL REFERENCES Cluster(uuid) ON DELETE CASCADE,
    createDate TEXT NOT NULL,
    PRIMARY KEY (primaryStorageUuid, clusterUuid)
);
CREATE INDEX PrimaryStorageClusterRef_cluster ON PrimaryStorageClusterRef(clusterUuid);

CREATE TABLE LocalStorageHostRef (
    primaryStorageUuid TEXT NOT NULL REFERENCES PrimaryStorage(uuid) ON DELETE CASCADE,
    hostUuid TEXT NOT NULL REFERENCES Host(uuid) ON DELETE CASCADE,
    totalCapacity INTEGER NOT NULL DEFAULT 0, availableCapacity INTEGER NOT NULL DEFAULT 0,
    totalPhysicalCapacity INTEGER NOT NULL DEFAULT 0, availablePhysicalCapacity INTEGER NOT NULL DEFAULT 0,
    systemUsedCapacity INTEGER NOT NULL DEFAULT 0,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL,
    PRIMARY KEY (primaryStorageUuid, hostUuid)
);
CREATE INDEX LocalStorageHostRef_host ON LocalStorageHostRef(hostUuid);

CREATE TABLE LocalStorageResourceRef (
    resourceUuid TEXT PRIMARY KEY, primaryStorageUuid TEXT NOT NULL REFERENCES PrimaryStorage(uuid) ON DELETE CASCADE,
    hostUuid TEXT NOT NULL, size INTEGER NOT NULL DEFAULT 0, resourceType TEXT NOT NULL,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX LocalStorageResourceRef_host ON LocalStorageResourceRef(hostUuid);

CREATE TABLE BackupStorage (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, url TEXT NOT NULL,
    totalCapacity INTEGER NOT NULL DEFAULT 0, availableCapacity INTEGER NOT NULL DEFAULT 0,
    type TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'Enabled', status TEXT NOT NULL DEFAULT 'Connected',
    hostname TEXT, username TEXT, password TEXT, sshPort INTEGER NOT NULL DEFAULT 22,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE UNIQUE INDEX BackupStorage_hostname ON BackupStorage(hostname) WHERE hostname IS NOT NULL;

CREATE TABLE BackupStorageZoneRef (
    backupStorageUuid TEXT NOT NULL REFERENCES BackupStorage(uuid) ON DELETE CASCADE,
    zoneUuid TEXT NOT NULL REFERENCES Zone(uuid) ON DELETE CASCADE,
    createDate TEXT NOT NULL,
    PRIMARY KEY (backupStorageUuid, zoneUuid)
);
CREATE INDEX BackupStorageZoneRef_zone ON BackupStorageZoneRef(zoneUuid);

CREATE TABLE Image (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    state TEXT NOT NULL DEFAULT 'Enabled', status TEXT NOT NULL DEFAULT 'Creating',
    size INTEGER NOT NULL DEFAULT 0, actualSize INTEGER NOT NULL DEFAULT 0, md5Sum TEXT, url TEXT,
    mediaType TEXT NOT NULL DEFAULT 'RootVolumeTemplate', guestOsType TEXT, type TEXT NOT NULL DEFAULT 'zstack',
    platform TEXT NOT NULL DEFAULT 'Linux', format TEXT NOT NULL, system INTEGER NOT NULL DEFAULT 0,
    downloadProgress INTEGER,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX Image_name ON Image(name);
CREATE INDEX Image_status ON Image(status);

CREATE TABLE ImageBackupStorageRef (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    imageUuid TEXT NOT NULL REFERENCES Image(uuid) ON DELETE CASCADE,
    backupStorageUuid TEXT NOT NULL REFERENCES BackupStorage(uuid) ON DELETE CASCADE,
    installPath TEXT, status TEXT NOT NULL DEFAULT 'Downloading',
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL,
    UNIQUE (imageUuid, backupStorageUuid)
);
CREATE INDEX ImageBackupStorageRef_bs ON ImageBackupStorageRef(backupStorageUuid);

CREATE TABLE InstanceOffering (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    cpuNum INTEGER NOT NULL, cpuSpeed INTEGER NOT NULL, memorySize INTEGER NOT NULL,
    type TEXT NOT NULL DEFAULT 'UserVm', allocatorStrategy TEXT NOT NULL DEFAULT 'DefaultHostAllocatorStrategy',
    sortKey INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'Enabled',
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);

CREATE TABLE DiskOffering (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, diskSize INTEGER NOT NULL,
    sortKey INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'Enabled', type TEXT NOT NULL DEFAULT 'zstack',
    allocatorStrategy TEXT NOT NULL DEFAULT 'DefaultPrimaryStorageAllocationStrategy',
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);

CREATE TABLE L2Network (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    zoneUuid TEXT NOT NULL REFERENCES Zone(uuid) ON DELETE CASCADE,
    physicalInterface TEXT NOT NULL, type TEXT NOT NULL, vlan INTEGER,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX L2Network_zone ON L2Network(zoneUuid);

CREATE TABLE L2NetworkClusterRef (
    l2NetworkUuid TEXT NOT NULL REFERENCES L2Network(uuid) ON DELETE CASCADE,
    clusterUuid TEXT NOT NULL REFERENCES Cluster(uuid) ON DELETE CASCADE,
    createDate TEXT NOT NULL,
    PRIMARY KEY (l2NetworkUuid, clusterUuid)
);
CREATE INDEX L2NetworkClusterRef_cluster ON L2NetworkClusterRef(clusterUuid);

CREATE TABLE L3Network (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, type TEXT NOT NULL DEFAULT 'L3BasicNetwork',
    zoneUuid TEXT NOT NULL REFERENCES Zone(uuid) ON DELETE CASCADE,
    l2NetworkUuid TEXT NOT NULL REFERENCES L2Network(uuid) ON DELETE CASCADE,
    state TEXT NOT NULL DEFAULT 'Enabled', dnsDomain TEXT, system INTEGER NOT NULL DEFAULT 0,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX L3Network_l2 ON L3Network(l2NetworkUuid);
CREATE INDEX L3Network_zone ON L3Network(zoneUuid);

CREATE TABLE L3NetworkDns (
    l3NetworkUuid TEXT NOT NULL REFERENCES L3Network(uuid) ON DELETE CASCADE,
    dns TEXT NOT NULL, position INTEGER NOT NULL, createDate TEXT NOT NULL,
    PRIMARY KEY (l3NetworkUuid, dns)
);

CREATE TABLE IpRange (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    l3NetworkUuid TEXT NOT NULL REFERENCES L3Network(uuid) ON DELETE CASCADE,
    startIp TEXT NOT NULL, endIp TEXT NOT NULL, netmask TEXT NOT NULL, gateway TEXT NOT NULL,
    networkCidr TEXT, startInt INTEGER NOT NULL, endInt INTEGER NOT NULL,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX IpRange_l3 ON IpRange(l3NetworkUuid);

CREATE TABLE UsedIp (
    uuid TEXT PRIMARY KEY,
    ipRangeUuid TEXT NOT NULL REFERENCES IpRange(uuid) ON DELETE CASCADE,
    l3NetworkUuid TEXT NOT NULL REFERENCES L3Network(uuid) ON DELETE CASCADE,
    ip TEXT NOT NULL, ipInLong INTEGER NOT NULL, gateway TEXT, netmask TEXT, usedFor TEXT,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL,
    UNIQUE (l3NetworkUuid, ipInLong)
);
CREATE INDEX UsedIp_range ON UsedIp(ipRangeUuid, ipInLong);

CREATE TABLE NetworkServiceProvider (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, type TEXT NOT NULL UNIQUE,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);

CREATE TABLE NetworkServiceType (
    networkServiceProviderUuid TEXT NOT NULL REFERENCES NetworkServiceProvider(uuid) ON DELETE CASCADE,
    type TEXT NOT NULL, PRIMARY KEY (networkServiceProviderUuid, type)
);

CREATE TABLE NetworkServiceProviderL2NetworkRef (
    networkServiceProviderUuid TEXT NOT NULL REFERENCES NetworkServiceProvider(uuid) ON DELETE CASCADE,
    l2NetworkUuid TEXT NOT NULL REFERENCES L2Network(uuid) ON DELETE CASCADE,
    PRIMARY KEY (networkServiceProviderUuid, l2NetworkUuid)
);
CREATE INDEX NSPL2Ref_l2 ON NetworkServiceProviderL2NetworkRef(l2NetworkUuid);

CREATE TABLE NetworkServiceL3NetworkRef (
    l3NetworkUuid TEXT NOT NULL REFERENCES L3Network(uuid) ON DELETE CASCADE,
    networkServiceProviderUuid TEXT NOT NULL REFERENCES NetworkServiceProvider(uuid) ON DELETE CASCADE,
    networkServiceType TEXT NOT NULL,
    PRIMARY KEY (l3NetworkUuid, networkServiceType)
);
CREATE INDEX NSL3Ref_provider ON NetworkServiceL3NetworkRef(networkServiceProviderUuid);

CREATE TABLE VmInstance (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    zoneUuid TEXT REFERENCES Zone(uuid) ON DELETE SET NULL,
    clusterUuid TEXT REFERENCES Cluster(uuid) ON DELETE SET NULL,
    imageUuid TEXT, hostUuid TEXT REFERENCES Host(uuid) ON DELETE SET NULL,
    lastHostUuid TEXT REFERENCES Host(uuid) ON DELETE SET NULL,
    instanceOfferingUuid TEXT, rootVolumeUuid TEXT, platform TEXT, defaultL3NetworkUuid TEXT,
    type TEXT NOT NULL DEFAULT 'UserVm', hypervisorType TEXT NOT NULL DEFAULT 'KVM',
    memorySize INTEGER NOT NULL, cpuNum INTEGER NOT NULL, cpuSpeed INTEGER NOT NULL,
    allocatorStrategy TEXT, state TEXT NOT NULL DEFAULT 'Created', internalId INTEGER NOT NULL UNIQUE,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX VmInstance_host ON VmInstance(hostUuid);
CREATE INDEX VmInstance_lastHost ON VmInstance(lastHostUuid);
CREATE INDEX VmInstance_state ON VmInstance(state);
CREATE INDEX VmInstance_name ON VmInstance(name);
CREATE INDEX VmInstance_cluster ON VmInstance(clusterUuid);

CREATE TABLE VmNic (
    uuid TEXT PRIMARY KEY,
    vmInstanceUuid TEXT NOT NULL REFERENCES VmInstance(uuid) ON DELETE CASCADE,
    usedIpUuid TEXT REFERENCES UsedIp(uuid) ON DELETE SET NULL,
    l3NetworkUuid TEXT REFERENCES L3Network(uuid) ON DELETE SET NULL,
    ip TEXT, mac TEXT NOT NULL UNIQUE, netmask TEXT, gateway TEXT, metaData TEXT,
    internalName TEXT NOT NULL, deviceId INTEGER NOT NULL,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX VmNic_vm ON VmNic(vmInstanceUuid);
CREATE INDEX VmNic_ip ON VmNic(ip);
CREATE INDEX VmNic_l3 ON VmNic(l3NetworkUuid);

CREATE TABLE Volume (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    primaryStorageUuid TEXT REFERENCES PrimaryStorage(uuid) ON DELETE SET NULL,
    vmInstanceUuid TEXT REFERENCES VmInstance(uuid) ON DELETE SET NULL,
    diskOfferingUuid TEXT, rootImageUuid TEXT, installPath TEXT,
    type TEXT NOT NULL, format TEXT NOT NULL DEFAULT 'qcow2', size INTEGER NOT NULL DEFAULT 0,
    actualSize INTEGER, deviceId INTEGER,
    state TEXT NOT NULL DEFAULT 'Enabled', status TEXT NOT NULL DEFAULT 'NotInstantiated',
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX Volume_vm ON Volume(vmInstanceUuid);
CREATE INDEX Volume_ps ON Volume(primaryStorageUuid);
CREATE INDEX Volume_status ON Volume(status);

CREATE TABLE VolumeSnapshot (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, type TEXT NOT NULL DEFAULT 'Hypervisor',
    volumeUuid TEXT REFERENCES Volume(uuid) ON DELETE CASCADE,
    treeUuid TEXT, parentUuid TEXT, primaryStorageUuid TEXT, primaryStorageInstallPath TEXT,
    volumeType TEXT, format TEXT NOT NULL DEFAULT 'qcow2', latest INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'Enabled', status TEXT NOT NULL DEFAULT 'Creating',
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX VolumeSnapshot_volume ON VolumeSnapshot(volumeUuid);

CREATE TABLE Job (
    uuid TEXT PRIMARY KEY, apiName TEXT NOT NULL, state TEXT NOT NULL, resourceUuid TEXT,
    sessionUuid TEXT, request TEXT, result TEXT, httpStatus INTEGER,
    createDate TEXT NOT NULL, finishedDate TEXT
);
CREATE INDEX Job_state ON Job(state);
CREATE INDEX Job_created ON Job(createDate);

CREATE TABLE VmInternalId (id INTEGER PRIMARY KEY AUTOINCREMENT, vmInstanceUuid TEXT);

-- Tags vanish with their resource (ZStack 1.0: TestSystemTag1). One trigger per tagged table.
CREATE TRIGGER Zone_tags AFTER DELETE ON Zone BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER Cluster_tags AFTER DELETE ON Cluster BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER Host_tags AFTER DELETE ON Host BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER PrimaryStorage_tags AFTER DELETE ON PrimaryStorage BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER BackupStorage_tags AFTER DELETE ON BackupStorage BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER Image_tags AFTER DELETE ON Image BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER InstanceOffering_tags AFTER DELETE ON InstanceOffering BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER DiskOffering_tags AFTER DELETE ON DiskOffering BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER L2Network_tags AFTER DELETE ON L2Network BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER L3Network_tags AFTER DELETE ON L3Network BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER IpRange_tags AFTER DELETE ON IpRange BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER VmInstance_tags AFTER DELETE ON VmInstance BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER Volume_tags AFTER DELETE ON Volume BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER VolumeSnapshot_tags AFTER DELETE ON VolumeSnapshot BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
CREATE TRIGGER NetworkServiceProvider_tags AFTER DELETE ON NetworkServiceProvider BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
