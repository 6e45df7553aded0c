-- What each host's agent reported at its last connect: release, protocol level, source digest, and whether
-- it is one protocol level behind the controller (accepted, but needs upgrading).
ALTER TABLE Host ADD COLUMN agentVersion TEXT;
ALTER TABLE Host ADD COLUMN agentProtocol INTEGER;
ALTER TABLE Host ADD COLUMN agentDigest TEXT;
ALTER TABLE Host ADD COLUMN agentUpgradeNeeded INTEGER NOT NULL DEFAULT 0;
