"""Export a volume or snapshot of local primary storage to an SFTP backup storage as a new image.

The source (a volume file or a snapshot file, with its whole backing chain down to the cached image) is
flattened by ``qemu-img convert`` into ONE self-contained qcow2 next to it (``<source>.export-<id>.partial``),
its md5 computed, then uploaded over SFTP to ``<dest path>.partial`` and renamed to ``dest path`` only when
complete, whose size is checked against the local file. The local temporary file is removed whatever
happens; a failed upload removes the remote partial file. The SFTP password is never logged; the backup
storage's host key recorded by the controller is pinned (:func:`storage.fetch.host_key_pin`), as for downloads.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import asyncssh

from storage import files, qemuimg
from storage.errors import TransferFailed
from storage.fetch import SftpSource, host_key_pin


@dataclass(frozen=True)
class Exported:
    size: int          # bytes of the uploaded qcow2 file
    md5: str
    virtual_size: int  # the disk size the guest sees


async def export_to_sftp(source: Path, dest: SftpSource) -> Exported:
    tmp = source.with_name(f"{source.name}.export-{uuid.uuid4().hex[:12]}.partial")
    try:
        src_info = await qemuimg.info(source, fmt="qcow2")
        await qemuimg.convert(source, tmp, src_fmt="qcow2", dst_fmt="qcow2")
        md5 = await asyncio.to_thread(files.file_digest, tmp, "md5")
        size = tmp.stat().st_size
        await _upload(tmp, dest, size)
        return Exported(size=size, md5=md5, virtual_size=src_info.virtual_size)
    finally:
        files.remove_file(tmp)


async def _upload(local: Path, dest: SftpSource, size: int) -> None:
    final = PurePosixPath(dest.path)
    part = f"{final}.partial"
    try:
        async with (
            asyncssh.connect(dest.hostname, port=dest.port, username=dest.username, password=dest.password,
                             client_keys=None, agent_path=None, connect_timeout=30,
                             **host_key_pin(dest)) as conn,  # type: ignore[arg-type]
            conn.start_sftp_client() as sftp,
        ):
            await sftp.makedirs(str(final.parent), exist_ok=True)
            try:
                # OpenSSH's sftp-server drops a write larger than its 256 KiB packet limit: 128 KiB blocks
                await sftp.put(str(local), part, block_size=1 << 17, max_requests=32)
                got = (await sftp.stat(part)).size
                if got != size:
                    raise TransferFailed(f"upload to {dest!r} is incomplete: {got} of {size} bytes arrived",
                                         details={"dest": repr(dest)})
                await sftp.posix_rename(part, str(final))
            except BaseException:
                try:
                    await sftp.remove(part)
                except (asyncssh.SFTPError, OSError):
                    pass
                raise
    except (OSError, asyncssh.Error) as e:
        raise TransferFailed(f"sftp upload to {dest!r} failed: {e}", details={"dest": repr(dest)}) from e
