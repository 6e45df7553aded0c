"""Live migration endpoints (issue 15; 1.0's ``/vm/migrate``, reference nfs-migration.md §B.4).

* ``/vm/migrate/prepare`` on the DESTINATION: create the disk files of the VM (qcow2 of the same virtual size on
  the same backing file, at the same absolute paths as on the source) so that libvirt's storage copy
  (``VIR_MIGRATE_NON_SHARED_INC``: only the top layers travel, the base image is already in the destination's
  cache) has its targets; and tell the agent that the domain about to arrive is its own doing (its start events
  are not reported while the migration runs). A path that already exists is refused, never overwritten.
* ``/vm/migrate`` on the SOURCE: ``virDomainMigrateToURI3`` peer to peer to the destination's libvirtd
  (``qemu+tcp://<destHostIp>/system``), the migration stream to ``tcp://<destHostIp>``, flags
  LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE (+ NON_SHARED_INC with ``copyStorage``). The console's listen
  address and the host address in the domain metadata are rewritten to the destination's. The reply comes when
  the domain has left the source; a failure leaves the VM running on the source.
* ``/vm/migrate/progress`` on the SOURCE: the running migration's progress from libvirt's job statistics (bytes of
  memory and disk processed, remaining, total), read by the agent every half second while ``/vm/migrate`` runs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kvmagent.contract.base import AgentReply, AgentRequest
from kvmagent.contract.vm import TO, UUID_PATTERN, Uuid


class MigrationDiskTO(TO):
    path: str = Field(min_length=2, pattern=r"^/")
    size: int = Field(gt=0, description="virtual size in bytes")
    backingFile: str | None = Field(None, pattern=r"^/", description="absolute path of the backing file (it "
                                    "must exist on this host, in the same storage)")
    backingFormat: Literal["qcow2", "raw"] = "qcow2"


class PrepareMigrationReply(AgentReply):
    created: list[str] = Field(description="the disk files this call created (the controller deletes them if the "
                               "migration fails)")


class PrepareMigrationCmd(AgentRequest):
    PATH: ClassVar[str] = "/vm/migrate/prepare"
    Reply: ClassVar[type[AgentReply]] = PrepareMigrationReply
    IDEMPOTENT: ClassVar[bool] = False
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    storagePath: str | None = Field(None, min_length=2, description="the local storage holding the disks")
    disks: list[MigrationDiskTO] = []
    expectSeconds: float = Field(900, gt=0, le=86400, description="how long the incoming domain's events are "
                                 "the agent's own (the migration's time bound)")


class MigrationDoneCmd(AgentRequest):
    """On the DESTINATION when the migration ended (either way): the domain's events are reported again."""

    PATH: ClassVar[str] = "/vm/migrate/done"
    Reply: ClassVar[type[AgentReply]] = AgentReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)


class MigrateVmReply(AgentReply):
    elapsed: float = Field(description="seconds the migration took")
    dataTransferred: int | None = Field(None, description="bytes libvirt reported as transferred (memory and "
                                        "disks), when it did")


class MigrateVmCmd(AgentRequest):
    PATH: ClassVar[str] = "/vm/migrate"
    Reply: ClassVar[type[AgentReply]] = MigrateVmReply
    IDEMPOTENT: ClassVar[bool] = False
    uuid: Uuid = Field(pattern=UUID_PATTERN)
    destHostIp: str = Field(min_length=1, max_length=255, pattern=r"^[0-9A-Za-z.:-]+$")
    copyStorage: bool = Field(False, description="copy the disks' top layers (local storage)")
    timeout: float = Field(600, gt=0, le=86400)


class MigrationProgressReply(AgentReply):
    running: bool = Field(description="a migration of the VM runs from this host")
    percent: int | None = Field(default=None, ge=0, le=100, description="done share of the data")
    elapsedMs: int | None = None
    dataTotal: int | None = None
    dataProcessed: int | None = None
    dataRemaining: int | None = None
    memoryTotal: int | None = None
    memoryProcessed: int | None = None
    memoryRemaining: int | None = None
    diskTotal: int | None = None
    diskProcessed: int | None = None
    diskRemaining: int | None = None


class MigrationProgressCmd(AgentRequest):
    PATH: ClassVar[str] = "/vm/migrate/progress"
    Reply: ClassVar[type[AgentReply]] = MigrationProgressReply
    uuid: Uuid = Field(pattern=UUID_PATTERN)
