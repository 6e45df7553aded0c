"""A reproducible initramfs: a newc cpio archive written directly (no root, no mknod), then zstd.

Guarantees: entries in byte-wise sorted path order, inode numbers 1..n in that order, uid/gid 0,
every mtime = SOURCE_DATE_EPOCH, so the same tree gives the same bytes. Device nodes that the kernel
needs before devtmpfs is mounted (/dev/console, /dev/null) are added as archive entries.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

#: (path, mode, major, minor) of the character devices added to the archive
DEVICES = [("dev/console", stat.S_IFCHR | 0o600, 5, 1), ("dev/null", stat.S_IFCHR | 0o666, 1, 3)]
#: zstd level 19 with an 8 MiB window: the kernel allocates the window while unpacking (128 MB guests)
ZSTD = ["zstd", "-q", "-19", "--zstd=wlog=23", "-T1", "-c"]


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, rdev: tuple[int, int],
            name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


def _entries(root: Path) -> Iterator[tuple[str, os.stat_result | None, tuple[int, int, int] | None]]:
    """(relative path, lstat or None, device spec or None) in sorted order, devices merged in."""
    paths = {str(p.relative_to(root)): p for p in root.rglob("*")}
    devices = {path: (mode, major, minor) for path, mode, major, minor in DEVICES}
    for rel in sorted(paths.keys() | devices.keys(), key=os.fsencode):
        if rel in devices:
            yield rel, None, devices[rel]
        else:
            yield rel, paths[rel].lstat(), None


def newc(root: Path, mtime: int) -> bytes:
    """The whole archive of ``root`` as bytes (the tree is a few MB)."""
    chunks: list[bytes] = []
    for ino, (rel, st, dev) in enumerate(_entries(root), start=1):
        name = os.fsencode(rel)
        if dev is not None:
            chunks.append(_header(ino, dev[0], 1, mtime, 0, (dev[1], dev[2]), name))
            continue
        assert st is not None
        path = root / rel
        if stat.S_ISLNK(st.st_mode):
            data = os.fsencode(os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            data = path.read_bytes()
        elif stat.S_ISDIR(st.st_mode):
            data = b""
        else:
            raise SystemExit(f"build-tiny-image: unsupported file type in the rootfs: {path}")
        nlink = 2 if stat.S_ISDIR(st.st_mode) else 1
        mode = stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode)
        chunks.append(_header(ino, mode, nlink, mtime, len(data), (0, 0), name))
        chunks.append(data + b"\0" * (-len(data) % 4))
    chunks.append(_header(0, 0, 1, 0, 0, (0, 0), b"TRAILER!!!"))
    return b"".join(chunks)


def write_initramfs(root: Path, dest: Path, mtime: int, env: Mapping[str, str]) -> None:
    """Archive ``root`` and compress it with zstd (from the unpacked zstd deb) into ``dest``."""
    with dest.open("wb") as f:
        r = subprocess.run(ZSTD, input=newc(root, mtime), stdout=f, stderr=subprocess.PIPE, env=dict(env))
    if r.returncode != 0:
        raise SystemExit(f"build-tiny-image: zstd failed: {r.stderr.decode(errors='replace')}")


def _depends(ko: bytes) -> list[str]:
    """The ``depends=`` field of a module's .modinfo section."""
    at = ko.find(b"\0depends=")
    if at < 0:
        return []
    value = ko[at + 9:ko.index(b"\0", at + 9)].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def check_module_order(modules: list[str], files: Mapping[str, Path]) -> None:
    """Every module's dependencies are in the list and come before it (rcS insmods in list order)."""
    seen: set[str] = set()
    for m in modules:
        missing = [d for d in _depends(files[f"{m}.ko"].read_bytes()) if d not in seen]
        if missing:
            raise SystemExit(f"build-tiny-image: module {m} needs {missing} loaded before it: fix the order "
                             "in scripts/tiny-image/overlay/etc/modules.boot / modules.late")
        seen.add(m)
