"""Wire contract of the shared primary storage endpoints (NFS and SharedMountPoint; storage/shared.py).

``/sharedstorage/connect`` (every host of a cluster the storage is attached to, at attach and at each host
connect): NFS mounts ``url`` at ``mountPath`` (1.0's ``/nfsprimarystorage/mount``); both types then check the
directory (exists, is a directory, writable, the same file system as the other hosts': a marker the first host
wrote) and register it as a storage of this host, so every ``/localstorage/*`` endpoint works on it with
``storagePath=mountPath``. The reply carries the file system's capacity (statvfs). ``/sharedstorage/unmount``:
NFS only (1.0's ``/nfsprimarystorage/unmount``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kvmagent.contract.base import AgentReply, AgentRequest
from kvmagent.contract.storage import LocalStorageReply

#: Where every host mounts an NFS primary storage: ``<base>/prim-<psUuid>`` (1.0's nfsPrimaryStorage mount.base).
NFS_MOUNT_BASE = "/opt/zstack/nfsprimarystorage"
SharedType = Literal["NFS", "SharedMountPoint"]


def nfs_mount_path(ps_uuid: str) -> str:
    return f"{NFS_MOUNT_BASE}/prim-{ps_uuid}"


class ConnectSharedStorageReply(LocalStorageReply):
    mounted: bool = Field(False, description="NFS: this call mounted it (False: it was mounted already)")


class ConnectSharedStorageCmd(AgentRequest):
    PATH: ClassVar[str] = "/sharedstorage/connect"
    Reply: ClassVar[type[AgentReply]] = ConnectSharedStorageReply
    primaryStorageUuid: str = Field(min_length=1, max_length=64)
    hostUuid: str = Field(min_length=1, max_length=64)
    type: SharedType
    url: str = Field(min_length=2, max_length=2048)
    mountPath: str = Field(min_length=2, max_length=2048, pattern=r"^/")
    mountOptions: str | None = Field(default=None, max_length=1024)
    createMarker: bool = Field(False, description="no other host connected it yet: write the marker when missing "
                               "(else a missing marker means this host sees another file system)")


class UnmountSharedStorageReply(AgentReply):
    unmounted: bool


class UnmountSharedStorageCmd(AgentRequest):
    PATH: ClassVar[str] = "/sharedstorage/unmount"
    Reply: ClassVar[type[AgentReply]] = UnmountSharedStorageReply
    primaryStorageUuid: str = Field(min_length=1, max_length=64)
    mountPath: str = Field(min_length=2, max_length=2048, pattern=r"^/")
