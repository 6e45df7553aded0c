-- SSH host keys recorded at first contact (trust on first use, issue 18 security 7): the OpenSSH public key
-- line (hidden from inventories) and its SHA256 fingerprint (shown).
ALTER TABLE Host ADD COLUMN sshHostKey TEXT;
ALTER TABLE Host ADD COLUMN sshHostKeyFingerprint TEXT;
ALTER TABLE BackupStorage ADD COLUMN sshHostKey TEXT;
ALTER TABLE BackupStorage ADD COLUMN sshHostKeyFingerprint TEXT;
