-- Security groups (reference security-groups.md §1.1): groups, rules, L3 attachments, NIC membership, and
-- the per-host push state (the generation each host must enforce and the one it confirmed).

CREATE TABLE SecurityGroup (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT, state TEXT NOT NULL DEFAULT 'Enabled',
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX SecurityGroup_name ON SecurityGroup(name);

-- remoteSecurityGroupUuid (beyond 1.0): the rule admits the members of that group instead of a CIDR.
CREATE TABLE SecurityGroupRule (
    uuid TEXT PRIMARY KEY,
    securityGroupUuid TEXT NOT NULL REFERENCES SecurityGroup(uuid) ON DELETE CASCADE,
    type TEXT NOT NULL, protocol TEXT NOT NULL, startPort INTEGER NOT NULL, endPort INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'Enabled', allowedCidr TEXT,
    remoteSecurityGroupUuid TEXT REFERENCES SecurityGroup(uuid) ON DELETE CASCADE,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX SecurityGroupRule_sg ON SecurityGroupRule(securityGroupUuid);
CREATE INDEX SecurityGroupRule_remote ON SecurityGroupRule(remoteSecurityGroupUuid);

CREATE TABLE SecurityGroupL3NetworkRef (
    uuid TEXT PRIMARY KEY,
    l3NetworkUuid TEXT NOT NULL REFERENCES L3Network(uuid) ON DELETE CASCADE,
    securityGroupUuid TEXT NOT NULL REFERENCES SecurityGroup(uuid) ON DELETE CASCADE,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL,
    UNIQUE (securityGroupUuid, l3NetworkUuid)
);
CREATE INDEX SecurityGroupL3NetworkRef_l3 ON SecurityGroupL3NetworkRef(l3NetworkUuid);

CREATE TABLE VmNicSecurityGroupRef (
    uuid TEXT PRIMARY KEY,
    vmNicUuid TEXT NOT NULL REFERENCES VmNic(uuid) ON DELETE CASCADE,
    securityGroupUuid TEXT NOT NULL REFERENCES SecurityGroup(uuid) ON DELETE CASCADE,
    vmInstanceUuid TEXT NOT NULL REFERENCES VmInstance(uuid) ON DELETE CASCADE,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL,
    UNIQUE (securityGroupUuid, vmNicUuid)
);
CREATE INDEX VmNicSecurityGroupRef_nic ON VmNicSecurityGroupRef(vmNicUuid);
CREATE INDEX VmNicSecurityGroupRef_vm ON VmNicSecurityGroupRef(vmInstanceUuid);

-- 1.0's SecurityGroupFailureHostVO, done with generations: a host is current when applied = wanted.
CREATE TABLE SecurityGroupHostState (
    hostUuid TEXT PRIMARY KEY REFERENCES Host(uuid) ON DELETE CASCADE,
    wantedGeneration INTEGER NOT NULL DEFAULT 0, appliedGeneration INTEGER NOT NULL DEFAULT -1,
    failures INTEGER NOT NULL DEFAULT 0, lastError TEXT, lastOpDate TEXT
);

-- Query expansions through the membership tables (1.0: SecurityGroup vmNic.*, l3Network.*; VmNic
-- securityGroup.*): read-only views used only for conditions, never embedded in inventories.
CREATE VIEW SecurityGroupVmNicView AS
    SELECT r.securityGroupUuid AS securityGroupUuid, n.uuid AS uuid, n.vmInstanceUuid AS vmInstanceUuid,
           n.usedIpUuid AS usedIpUuid, n.l3NetworkUuid AS l3NetworkUuid, n.ip AS ip, n.mac AS mac,
           n.netmask AS netmask, n.gateway AS gateway, n.metaData AS metaData, n.internalName AS internalName,
           n.deviceId AS deviceId, n.createDate AS createDate, n.lastOpDate AS lastOpDate
    FROM VmNicSecurityGroupRef r JOIN VmNic n ON n.uuid = r.vmNicUuid;
CREATE VIEW SecurityGroupL3NetworkView AS
    SELECT r.securityGroupUuid AS securityGroupUuid, l.uuid AS uuid, l.name AS name,
           l.description AS description, l.type AS type, l.zoneUuid AS zoneUuid, l.l2NetworkUuid AS l2NetworkUuid,
           l.state AS state, l.dnsDomain AS dnsDomain, l.system AS system, l.createDate AS createDate,
           l.lastOpDate AS lastOpDate
    FROM SecurityGroupL3NetworkRef r JOIN L3Network l ON l.uuid = r.l3NetworkUuid;
CREATE VIEW VmNicSecurityGroupView AS
    SELECT r.vmNicUuid AS vmNicUuid, g.uuid AS uuid, g.name AS name, g.description AS description,
           g.state AS state, g.createDate AS createDate, g.lastOpDate AS lastOpDate
    FROM VmNicSecurityGroupRef r JOIN SecurityGroup g ON g.uuid = r.securityGroupUuid;

CREATE TRIGGER SecurityGroup_tags AFTER DELETE ON SecurityGroup BEGIN
  DELETE FROM SystemTag WHERE resourceUuid = OLD.uuid; DELETE FROM UserTag WHERE resourceUuid = OLD.uuid; END;
