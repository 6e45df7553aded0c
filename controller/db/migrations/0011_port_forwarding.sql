-- Port forwarding on the virtual router (reference virtual-router.md §2, controller/vrouter_provider/portforward.py):
-- a rule maps a VIP's port range (one protocol) to the same-sized range of a VM NIC (vmNicUuid NULL: detached),
-- optionally only for sources in allowedCidr. Many rules may share a VIP (Vip.useFor = 'PortForwarding').
CREATE TABLE PortForwardingRule (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL, description TEXT,
    vipUuid TEXT NOT NULL REFERENCES Vip(uuid) ON DELETE CASCADE,
    vmNicUuid TEXT REFERENCES VmNic(uuid) ON DELETE SET NULL,
    vipIp TEXT NOT NULL, guestIp TEXT,
    vipPortStart INTEGER NOT NULL, vipPortEnd INTEGER NOT NULL,
    privatePortStart INTEGER NOT NULL, privatePortEnd INTEGER NOT NULL,
    protocolType TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'Enabled', allowedCidr TEXT,
    createDate TEXT NOT NULL, lastOpDate TEXT NOT NULL
);
CREATE INDEX PortForwardingRule_vip ON PortForwardingRule(vipUuid);
CREATE INDEX PortForwardingRule_nic ON PortForwardingRule(vmNicUuid);
-- a deleted NIC detaches its rules: the guest address goes with it
CREATE TRIGGER PortForwardingRule_nic_gone AFTER UPDATE OF vmNicUuid ON PortForwardingRule
WHEN NEW.vmNicUuid IS NULL AND NEW.guestIp IS NOT NULL
BEGIN UPDATE PortForwardingRule SET guestIp = NULL WHERE uuid = NEW.uuid; END;
