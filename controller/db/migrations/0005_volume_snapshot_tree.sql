-- QueryVolumeSnapshotTree (1.0's VolumeSnapshotTreeVO): one row per snapshot tree, derived from the
-- snapshots themselves (treeUuid), so it can never disagree with them. `current` is the tree that holds the
-- volume's latest snapshot (the one the volume's next snapshot grows).
CREATE VIEW IF NOT EXISTS VolumeSnapshotTree AS
    SELECT treeUuid AS uuid, volumeUuid, MAX(latest) AS current,
           MIN(createDate) AS createDate, MAX(lastOpDate) AS lastOpDate
    FROM VolumeSnapshot WHERE treeUuid IS NOT NULL GROUP BY treeUuid, volumeUuid;
CREATE INDEX IF NOT EXISTS VolumeSnapshot_tree ON VolumeSnapshot(treeUuid);
