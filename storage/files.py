"""Small file helpers shared by the storage modules (blocking: call them through ``asyncio.to_thread``)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

CHUNK = 4 << 20


def file_digest(path: str | os.PathLike[str], algorithm: str = "md5") -> str:
    """Hex digest of the whole file content (holes read as zeros)."""
    h = hashlib.new(algorithm)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def allocated_bytes(path: str | os.PathLike[str]) -> int:
    return os.stat(path).st_blocks * 512


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_file(path: str | os.PathLike[str]) -> bool:
    """Remove a file; a missing file is not an error. Returns whether something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_tree(path: str | os.PathLike[str]) -> bool:
    if not os.path.lexists(path):
        return False
    shutil.rmtree(path)
    return True


def tree_allocated(roots: list[Path]) -> int:
    """Allocated bytes of every file under ``roots`` (missing roots count as 0), each file once however
    many names (hard links) it has: a live snapshot names one image twice for a while."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                try:
                    st = os.lstat(os.path.join(dirpath, n))
                except FileNotFoundError:
                    continue
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def remove_partials(root: Path, suffix: str) -> list[Path]:
    """Delete every ``*<suffix>`` file under ``root``; return what was removed."""
    removed = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            if n.endswith(suffix):
                p = Path(dirpath) / n
                if remove_file(p):
                    removed.append(p)
    return removed


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p`` returning the directories actually created, outermost first (for undo)."""
    created: list[Path] = []
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
            created.append(d)
        except FileExistsError:
            pass
    return created


def remove_dirs(dirs: list[Path]) -> None:
    """Undo of :func:`make_dirs`: remove the created directories innermost first if they are empty."""
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            pass
