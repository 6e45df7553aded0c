-- Shared primary storage (NFS, SharedMountPoint; issue 15). One capacity for the whole storage, kept in the
-- PrimaryStorage row: every volume or snapshot on it holds a SharedStorageResourceRef (its size taken from
-- availableCapacity once, returned once). SharedStorageHostRef: the hosts that have the storage connected
-- (mounted, checked to see the same file system); a host without it cannot use the storage.
CREATE TABLE SharedStorageResourceRef (
    resourceUuid TEXT PRIMARY KEY,
    primaryStorageUuid TEXT NOT NULL REFERENCES PrimaryStorage(uuid) ON DELETE CASCADE,
    size INTEGER NOT NULL DEFAULT 0, resourceType TEXT NOT NULL,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX SharedStorageResourceRef_ps ON SharedStorageResourceRef(primaryStorageUuid);

CREATE TABLE SharedStorageHostRef (
    primaryStorageUuid TEXT NOT NULL REFERENCES PrimaryStorage(uuid) ON DELETE CASCADE,
    hostUuid TEXT NOT NULL REFERENCES Host(uuid) ON DELETE CASCADE,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL,
    PRIMARY KEY (primaryStorageUuid, hostUuid)
);
CREATE INDEX SharedStorageHostRef_host ON SharedStorageHostRef(hostUuid);
