"""Local primary storage layout: every path of the storage is derived here and nowhere else.

Under the primary storage ``url`` on each host (ZStack 1.0 §3.5)::

    rootVolumes/acct-<acct>/vol-<uuid>/<uuid>.qcow2
    dataVolumes/acct-<acct>/vol-<uuid>/<uuid>.qcow2
    <volume dir>/snapshots/<snapUuid>.qcow2
    imagecache/template/<img>/<img>.qcow2
    imagecache/iso/<img>/<img>.iso
    .zstack-ps.json                                  marker with the primary storage uuid

Identifiers are checked (letters, digits, ``-``; no ``/``, no ``..``) so a derived path never leaves the
root, and :meth:`LocalLayout.contain` validates paths given by the controller.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from storage.errors import InvalidArgument

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
MARKER = ".zstack-ps.json"
PARTIAL_SUFFIX = ".partial"


class VolumeType(StrEnum):
    ROOT = "Root"
    DATA = "Data"


def check_id(field: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidArgument(
            f"{field} {value!r} is not a valid identifier (letters, digits and '-', at most 64)",
            details={"field": field, "value": value},
        )
    return value


@dataclass(frozen=True)
class LocalLayout:
    """Paths of one local primary storage whose url is ``root`` (absolute, normalised)."""

    root: Path

    @classmethod
    def of(cls, url: str | os.PathLike[str]) -> LocalLayout:
        p = os.fspath(url)
        if p.startswith("file://"):
            p = p[len("file://") :]
        if not p.startswith("/") or "\0" in p:
            raise InvalidArgument(
                f"storagePath {p!r} must be an absolute directory path",
                details={"field": "storagePath", "value": p},
            )
        norm = Path(os.path.normpath(p))
        if norm == Path("/"):
            raise InvalidArgument(
                "storagePath '/' is not allowed", details={"field": "storagePath", "value": p}
            )
        return cls(norm)

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    def volume_dir(self, kind: VolumeType, account_uuid: str, volume_uuid: str) -> Path:
        top = "rootVolumes" if VolumeType(kind) is VolumeType.ROOT else "dataVolumes"
        return (
            self.root
            / top
            / f"acct-{check_id('accountUuid', account_uuid)}"
            / f"vol-{check_id('volumeUuid', volume_uuid)}"
        )

    def volume_path(self, kind: VolumeType, account_uuid: str, volume_uuid: str) -> Path:
        return self.volume_dir(kind, account_uuid, volume_uuid) / f"{volume_uuid}.qcow2"

    def template_cache(self, image_uuid: str) -> Path:
        img = check_id("imageUuid", image_uuid)
        return self.root / "imagecache" / "template" / img / f"{img}.qcow2"

    def iso_cache(self, image_uuid: str) -> Path:
        img = check_id("imageUuid", image_uuid)
        return self.root / "imagecache" / "iso" / img / f"{img}.iso"

    def image_cache(self, image_uuid: str, fmt: str) -> Path:
        """Cache path of an image: ISOs under ``iso/``, disk images (qcow2 or raw) under ``template/``."""
        return self.iso_cache(image_uuid) if fmt == "iso" else self.template_cache(image_uuid)

    def contain(self, path: str | os.PathLike[str], field: str = "path") -> Path:
        """Return ``path`` normalised if it lies strictly inside the root (symlinks resolved), else raise."""
        p = os.fspath(path)
        if not p.startswith("/") or "\0" in p:
            raise InvalidArgument(
                f"{field} {p!r} must be an absolute path", details={"field": field, "value": p}
            )
        real = Path(os.path.realpath(p))
        root = Path(os.path.realpath(self.root))
        if real == root or root not in real.parents:
            raise InvalidArgument(
                f"{field} {p!r} is outside primary storage {self.root}",
                details={"field": field, "value": p, "storagePath": str(self.root)},
            )
        return Path(os.path.normpath(p))


def snapshot_dir(volume_path: Path) -> Path:
    return volume_path.parent / "snapshots"


def snapshot_path(volume_path: Path, snapshot_uuid: str) -> Path:
    return snapshot_dir(volume_path) / f"{check_id('snapshotUuid', snapshot_uuid)}.qcow2"


def partial_path(final: Path) -> Path:
    """The temporary name a file is written under before its atomic rename (removed by reconcile)."""
    return final.with_name(final.name + PARTIAL_SUFFIX)
