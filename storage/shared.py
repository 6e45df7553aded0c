"""Shared primary storage on one host: an NFS export mounted at the same path on every host (1.0's NFS primary
storage), or a shared file system the operator mounted at one path on every host (``SharedMountPoint``, ZStack's
later name for it). Once connected, the directory is used with the local-storage layout and code
(:mod:`storage.local`: image cache, qcow2 overlays on a cached base, data volumes, snapshots); only the
connect step differs, and it is here.

NFS: ``mount -t nfs [-o <options>] <server>:<export> <mountPath>`` (an argv list, never a shell string); idempotent
when the path is already mounted from the same source; a path occupied by another file system is refused
(1.0: "<path> is occupied by another device"). ``/proc/mounts`` tells what is mounted. Unmount:
``umount -f -l <path>`` (1.0). NOTE: the lab kernel this project is developed on has neither ``nfs`` nor ``nfsd``,
so the NFS mount itself is exercised by unit tests only (argv, ``/proc/mounts`` parsing, error mapping); the
end-to-end tests use a SharedMountPoint storage.

Same file system on every host: the first host to connect writes a marker (``.zstack-ps.json`` with the primary
storage uuid and ``"shared": true``); a later host (``create_marker=False``: the controller knows another host
connected it already) must find that marker, or it does not see the same file system at that path and its
connect fails, saying so. The directory must exist, be a directory and be writable (a probe file is written and
removed).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage import files
from storage.errors import Conflict, InvalidArgument, NotFound, StorageError
from storage.layout import MARKER, LocalLayout, check_id, partial_path
from zsutil import nfsurl, runner
from zsutil.nfsurl import NfsUrl

#: the mount options accepted (comma-separated key or key=value of letters, digits, '.', '_')
_OPTIONS = re.compile(r"[A-Za-z0-9_]+(=[A-Za-z0-9._]+)?(,[A-Za-z0-9_]+(=[A-Za-z0-9._]+)?)*")
MOUNT_TIMEOUT = 120.0


class MountFailed(StorageError):
    """mount/umount failed (the NFS server is unreachable, the export does not exist, permission...)."""

    status = 502
    code = "STORAGE.MOUNT_FAILED"


class NotShared(StorageError):
    """The path does not show the file system the other hosts of the storage see."""

    status = 409
    code = "STORAGE.NOT_SHARED"


def parse_nfs_url(url: str) -> NfsUrl:
    """``host:/path`` → :class:`NfsUrl`; InvalidArgument (field ``url``) naming what is allowed otherwise."""
    try:
        return nfsurl.parse(url)
    except ValueError as e:
        raise InvalidArgument(f"invalid field[url]: {e}", details={"field": "url", "value": url,
                                                                   "allowed": nfsurl.ALLOWED}) from None


def check_options(options: str | None) -> str | None:
    if options is None or options == "":
        return None
    if not _OPTIONS.fullmatch(options):
        raise InvalidArgument(f"invalid field[mountOptions]: {options!r}; allowed: comma-separated key or "
                              "key=value of letters, digits, '.' and '_' (e.g. vers=4.1,soft,timeo=600)",
                              details={"field": "mountOptions", "value": options})
    return options


def mount_argv(url: str, mount_path: str, options: str | None = None) -> list[str]:
    """The mount command of an NFS export (checked url and options; an argv list)."""
    src = parse_nfs_url(url)
    opts = check_options(options)
    return ["mount", "-t", "nfs", *(["-o", opts] if opts else []), str(src), str(LocalLayout.of(mount_path).root)]


def umount_argv(mount_path: str) -> list[str]:
    return ["umount", "-f", "-l", str(LocalLayout.of(mount_path).root)]


@dataclass(frozen=True)
class MountEntry:
    source: str
    target: str
    fstype: str
    options: str


def _unescape(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[MountEntry]:
    """The entries of ``/proc/mounts`` (or ``/proc/self/mounts``); malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append(MountEntry(_unescape(parts[0]), _unescape(parts[1]), parts[2], parts[3]))
    return out


def mounted_at(entries: list[MountEntry], target: str) -> MountEntry | None:
    """The entry mounted last (the visible one) at ``target``, or None."""
    norm = os.path.normpath(target)
    found = [e for e in entries if os.path.normpath(e.target) == norm]
    return found[-1] if found else None


def same_source(entry: MountEntry, url: NfsUrl) -> bool:
    if not entry.fstype.startswith("nfs"):
        return False
    server, _, export = entry.source.partition(":")
    return server == url.server and os.path.normpath(export or "/") == url.export


Run = Callable[..., Awaitable[runner.Result]]


def _read_mounts(mounts_file: str) -> list[MountEntry]:
    return parse_mounts(Path(mounts_file).read_text())


async def mount_nfs(url: str, mount_path: str, *, options: str | None = None, mounts_file: str = "/proc/mounts",
                    run: Run = runner.run) -> bool:
    """Mount ``url`` at ``mount_path``; False when it is mounted there from the same source already (idempotent).
    A path occupied by another file system → Conflict; a failing mount → MountFailed naming url and path."""
    argv = mount_argv(url, mount_path, options)
    src = parse_nfs_url(url)
    path = argv[-1]
    entry = mounted_at(_read_mounts(mounts_file), path)
    if entry is not None:
        if same_source(entry, src):
            return False
        raise Conflict(f"{path} is occupied by another device ({entry.source}, {entry.fstype}); cannot mount NFS "
                       f"{src} there", details={"field": "mountPath", "value": path, "occupiedBy": entry.source})
    made = await asyncio.to_thread(files.make_dirs, Path(path))
    try:
        await run(argv, timeout=MOUNT_TIMEOUT)
    except runner.ProcessError as e:
        await asyncio.to_thread(files.remove_dirs, made)  # leave no empty mount point behind
        why = (e.stderr.strip().splitlines() or [e.reason or f"exit code {e.rc}"])[-1]
        raise MountFailed(f"cannot mount NFS {src} at {path}: {why}",
                          details={"field": "url", "value": url, "mountPath": path}) from e
    return True


async def unmount_nfs(mount_path: str, *, mounts_file: str = "/proc/mounts", run: Run = runner.run) -> bool:
    """``umount -f -l`` when something is mounted at the path; False when nothing is (idempotent)."""
    argv = umount_argv(mount_path)
    if mounted_at(_read_mounts(mounts_file), argv[-1]) is None:
        return False
    try:
        await run(argv, timeout=MOUNT_TIMEOUT)
    except runner.ProcessError as e:
        raise MountFailed(f"cannot unmount {argv[-1]}: {e}", details={"field": "mountPath", "value": argv[-1]}) from e
    return True


def read_marker(path: Path) -> dict[str, Any] | None:
    marker = path / MARKER
    try:
        return dict(json.loads(marker.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as e:
        raise Conflict(f"the marker {marker} cannot be read: {e}", details={"field": "url", "value": str(path)}) from e


def is_shared_root(path: Path) -> bool:
    """Whether ``path`` holds the marker of a shared primary storage (other hosts write there too)."""
    try:
        return bool((read_marker(path) or {}).get("shared"))
    except StorageError:
        return False


def check_shared_dir(path: str, ps_uuid: str, host_uuid: str, *, create_marker: bool, kind: str) -> Path:
    """The connect checks of a shared directory (module docstring); returns the normalised root."""
    check_id("primaryStorageUuid", ps_uuid)
    check_id("hostUuid", host_uuid)
    root = LocalLayout.of(path).root
    where = {"field": "url", "value": str(root)}
    if not root.exists():
        raise NotFound(f"the shared mount point {root} does not exist on this host; mount the shared file system "
                       "there first", details=where)
    if not root.is_dir():
        raise InvalidArgument(f"the shared mount point {root} is not a directory", details=where)
    probe = root / f".zstack-probe-{host_uuid}-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as e:
        raise Conflict(f"the shared mount point {root} is not writable on this host: {e.strerror or e}",
                       details=where) from e
    marker = read_marker(root)
    if marker is not None:
        if marker.get("primaryStorageUuid") != ps_uuid:
            raise Conflict(f"{root} is already primary storage {marker.get('primaryStorageUuid')}, not {ps_uuid}",
                           details={**where, "existing": marker.get("primaryStorageUuid")})
        if not marker.get("shared"):
            raise Conflict(f"{root} holds the marker of a local primary storage, not of a shared one", details=where)
        return root
    if not create_marker:
        raise NotShared(f"{root} on this host has no marker of primary storage[uuid:{ps_uuid}], which the hosts that "
                        f"connected it before wrote there: this host does not see the same shared file system at "
                        f"{root}; mount it there (on every host)", details=where)
    tmp = partial_path(root / MARKER)
    tmp.write_text(json.dumps({"primaryStorageUuid": ps_uuid, "hostUuid": host_uuid, "shared": True,
                               "type": kind}))
    os.replace(tmp, root / MARKER)
    return root
