-- The web console's live feed reads, several times a second while a browser has a page open, the VMs whose
-- lastOpDate moved and the jobs that finished since its last look: both were full table scans.
CREATE INDEX IF NOT EXISTS VmInstance_lastOp ON VmInstance(lastOpDate);
CREATE INDEX IF NOT EXISTS Job_finished ON Job(finishedDate);
