"""Wire contract of the agent's local-storage endpoints (ZStack 1.0 ``/localstorage/*`` paths).

Every request names the primary storage by ``storagePath`` (the PS url, identical on every host); every
reply carries the capacity of that storage on this host (:class:`LocalStorageReply`). Every command is
idempotent: creating what exists identically succeeds, deleting what is missing succeeds.

Host-to-host copy: the controller asks the DESTINATION agent for a one-time transfer ticket bound to the copy
(:class:`IssueTicketCmd`: storage, files and sizes, lifetime; ``kvmagent.tickets``), then sends
:class:`CopyToRemoteCmd` to the SOURCE agent with the destination agent's URL and that ticket (never the
destination's host token); the source streams each file to the destination's raw endpoint
``POST /localstorage/receive`` (see ``storage.migrate``), which is not a JSON endpoint.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from kvmagent.contract.base import AgentReply, AgentRequest

ImageFormat = Literal["qcow2", "raw", "iso"]
VolumeKind = Literal["Root", "Data"]
Uuid = str  # letters, digits and '-' (checked by the storage layer, which names the field)


class LocalStorageReply(AgentReply):
    totalCapacity: int = 0
    availableCapacity: int = 0
    totalPhysicalCapacity: int = 0
    availablePhysicalCapacity: int = 0
    #: Bytes allocated under the storage's directories, measured by the Init and Capacity commands and
    #: repeated by other replies for a while after; -1 when that measurement is too old.
    usedByStorage: int = 0


class LocalStorageCmd(AgentRequest):
    storagePath: str = Field(min_length=2)


class InitReply(LocalStorageReply):
    pass


class InitCmd(LocalStorageCmd):
    PATH = "/localstorage/init"
    Reply = InitReply
    primaryStorageUuid: Uuid
    hostUuid: Uuid | None = None


class CapacityCmd(LocalStorageCmd):
    PATH = "/localstorage/capacity"
    Reply = LocalStorageReply


class DownloadImageReply(LocalStorageReply):
    installPath: str
    format: Literal["qcow2", "iso"]
    md5: str
    size: int
    virtualSize: int
    actualSize: int


class DownloadImageCmd(LocalStorageCmd):
    """Download an image into this host's cache. ``url``: ``file:///path``, ``http(s)://...`` or
    ``sftp://user@host[:port]/path`` (an SFTP backup storage) with ``sftpPassword`` in this body (never in the
    url) and ``sftpHostKey``, the storage's SSH host key recorded by the controller, which the agent pins."""

    PATH = "/localstorage/image/download"
    Reply = DownloadImageReply
    imageUuid: Uuid
    format: ImageFormat
    url: str = Field(min_length=1)
    sftpPassword: str | None = Field(default=None, repr=False)
    sftpHostKey: str | None = None
    md5: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")
    size: int | None = Field(default=None, ge=0)


class VolumeReply(LocalStorageReply):
    installPath: str
    size: int = 0
    actualSize: int = 0


class CreateVolumeFromCacheCmd(LocalStorageCmd):
    PATH = "/localstorage/volume/createfromcache"
    Reply = VolumeReply
    accountUuid: Uuid
    volumeUuid: Uuid
    volumeType: VolumeKind = "Root"
    imageUuid: Uuid
    size: int | None = Field(default=None, gt=0)


class CreateEmptyVolumeCmd(LocalStorageCmd):
    PATH = "/localstorage/volume/createempty"
    Reply = VolumeReply
    accountUuid: Uuid
    volumeUuid: Uuid
    volumeType: VolumeKind = "Data"
    size: int = Field(gt=0)


class CreateVolumeFromSnapshotCmd(LocalStorageCmd):
    """A new volume holding a snapshot (or volume) file of this storage, flattened into one qcow2."""

    PATH = "/localstorage/volume/createfromsnapshot"
    Reply = VolumeReply
    accountUuid: Uuid
    volumeUuid: Uuid
    volumeType: VolumeKind = "Data"
    snapshotPath: str = Field(min_length=2)


class DeleteVolumeReply(LocalStorageReply):
    deleted: bool


class DeleteVolumeCmd(LocalStorageCmd):
    PATH = "/localstorage/volume/delete"
    Reply = DeleteVolumeReply
    installPath: str


class VolumeInfoReply(LocalStorageReply):
    installPath: str
    format: str
    size: int
    actualSize: int
    backingFile: str | None = None
    chain: list[str] = []


class VolumeInfoCmd(LocalStorageCmd):
    PATH = "/localstorage/volume/info"
    Reply = VolumeInfoReply
    installPath: str


class SnapshotReply(LocalStorageReply):
    snapshotPath: str
    volumePath: str
    #: True when the snapshot was taken live (the VM was running and kept running).
    live: bool = False


class CreateSnapshotCmd(LocalStorageCmd):
    """The volume's content becomes ``snapshots/<snapshotUuid>.qcow2``; the volume keeps its path as a new
    overlay on it. With ``vmUuid`` (and ``volumeUuid``, the disk's serial) and that VM running on this
    host, the snapshot is taken live (the VM switches to the new overlay, ``capability:liveSnapshot``);
    otherwise offline (nothing may run on the volume)."""

    PATH = "/localstorage/snapshot/create"
    Reply = SnapshotReply
    volumePath: str
    snapshotUuid: Uuid
    vmUuid: Uuid | None = None
    volumeUuid: Uuid | None = None

    @model_validator(mode="after")
    def _live_names_the_disk(self) -> Self:
        if self.vmUuid is not None and not self.volumeUuid:
            raise ValueError(f"volumeUuid is required with vmUuid={self.vmUuid!r}: it names the VM's disk "
                             "(its serial) to snapshot live")
        return self


class RevertSnapshotCmd(LocalStorageCmd):
    PATH = "/localstorage/snapshot/revert"
    Reply = SnapshotReply
    volumePath: str
    snapshotPath: str


class DeleteSnapshotReply(LocalStorageReply):
    deleted: bool


class DeleteSnapshotCmd(LocalStorageCmd):
    PATH = "/localstorage/snapshot/delete"
    Reply = DeleteSnapshotReply
    volumePath: str
    snapshotPath: str


class ChainLinkTO(AgentReply):
    path: str
    backingFile: str | None
    size: int
    actualSize: int


class VerifyChainReply(LocalStorageReply):
    chain: list[ChainLinkTO]


class VerifyChainCmd(LocalStorageCmd):
    PATH = "/localstorage/snapshot/verifychain"
    Reply = VerifyChainReply
    volumePath: str


class Md5TO(AgentRequest):
    resourceUuid: str | None = None
    path: str


class Md5ResultTO(AgentReply):
    resourceUuid: str | None = None
    path: str
    md5: str


class GetMd5Reply(LocalStorageReply):
    md5s: list[Md5ResultTO]


class GetMd5Cmd(LocalStorageCmd):
    PATH = "/localstorage/getmd5"
    Reply = GetMd5Reply
    md5s: list[Md5TO]


class BitsTO(AgentReply):
    path: str
    existing: bool
    size: int | None = None
    md5: str | None = None


class CheckBitsReply(LocalStorageReply):
    bits: list[BitsTO]


class CheckBitsCmd(LocalStorageCmd):
    PATH = "/localstorage/checkbits"
    Reply = CheckBitsReply
    paths: list[str] = Field(min_length=1)
    withMd5: bool = False


class CopiedTO(AgentReply):
    path: str
    size: int
    allocatedSize: int
    checksum: str = Field(description="'xxh3-128:<hex>' (stream v3), 'crc32:<hex>' (v2) or 'sha256:<hex>' (v1) "
                                      "of the copied bytes")
    skipped: bool = False


class CopyToRemoteReply(LocalStorageReply):
    copied: list[CopiedTO]


class CopyToRemoteCmd(LocalStorageCmd):
    """On the SOURCE host: stream ``paths`` (and ``baseImagePath`` when the destination lacks it, checked by
    path + md5) to the same absolute paths on the destination agent. Long-running (hours for big volumes)."""

    PATH = "/localstorage/copytoremote"
    Reply = CopyToRemoteReply
    paths: list[str] = Field(min_length=1)
    baseImagePath: str | None = None
    destAgentUrl: str = Field(pattern=r"^https?://")
    #: a transfer ticket of the destination (:class:`IssueTicketCmd`); its host token is also accepted there
    destToken: str = Field(min_length=1, repr=False)


class ExportReply(LocalStorageReply):
    size: int = Field(description="bytes of the uploaded self-contained qcow2")
    md5: str
    virtualSize: int


class ExportCmd(LocalStorageCmd):
    """Flatten a volume or snapshot file (``installPath``, inside ``storagePath``) with its backing chain into
    one qcow2 and upload it to an SFTP backup storage (``url``: ``sftp://user@host[:port]/path`` with
    ``sftpPassword`` in this body, never in the url, and ``sftpHostKey``, the storage's SSH host key recorded by
    the controller, which the agent pins; written as ``<path>.partial`` and renamed when complete). Long-running."""

    PATH = "/localstorage/export"
    Reply = ExportReply
    installPath: str = Field(min_length=2)
    url: str = Field(min_length=1)
    sftpPassword: str = Field(min_length=1, repr=False)
    sftpHostKey: str | None = None


class TicketFileTO(AgentRequest):
    path: str = Field(min_length=2)
    size: int = Field(ge=0)


class IssueTicketReply(AgentReply):
    ticket: str = Field(repr=False)


class IssueTicketCmd(LocalStorageCmd):
    """On the DESTINATION host: a one-time ticket that lets a source host send exactly ``files`` (each once,
    with exactly its size) into this storage, check them and delete what it sent; expires after ``idle``
    seconds without use or ``maxAge`` seconds."""

    PATH = "/localstorage/ticket/issue"
    Reply = IssueTicketReply
    files: list[TicketFileTO] = Field(min_length=1)
    idle: float = Field(default=600, gt=0, le=3600)
    maxAge: float = Field(default=24 * 3600, gt=0, le=7 * 24 * 3600)


class RevokeTicketReply(AgentReply):
    revoked: bool


class RevokeTicketCmd(AgentRequest):
    PATH = "/localstorage/ticket/revoke"
    Reply = RevokeTicketReply
    IDEMPOTENT = True
    ticket: str = Field(min_length=1, repr=False)


class DeleteBitsReply(LocalStorageReply):
    deleted: list[str]


class DeleteBitsCmd(LocalStorageCmd):
    PATH = "/localstorage/delete"
    Reply = DeleteBitsReply
    paths: list[str] = Field(min_length=1)


class InspectImageReply(AgentReply):
    path: str
    format: Literal["qcow2", "raw", "iso"]
    virtualSize: int
    actualSize: int


class InspectImageCmd(AgentRequest):
    """Inspect a file on this host (format allowed, self-contained) without trusting it."""

    PATH = "/image/inspect"
    Reply = InspectImageReply
    path: str
    format: ImageFormat | None = None


class ReceiveReply(AgentReply):
    """Reply of the raw ``POST /localstorage/receive`` endpoint (destination side of a copy)."""

    path: str
    size: int
    allocated: int
    checksum: str = Field(description="'xxh3-128:<hex>' (stream v3), 'crc32:<hex>' (v2) or 'sha256:<hex>' (v1) "
                                      "of the received stream")
