"""The shared-object closure of ELF64 binaries unpacked from .deb files (no readelf/ldd needed).

``closure(tree, binaries)`` follows DT_NEEDED entries, resolving each soname in the library directories of
``tree`` (the unpacked packages), and returns the (directory, soname) pairs to copy into a guest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib")
DT_NEEDED, DT_STRTAB = 1, 5


def needed(path: Path) -> list[str]:
    """The DT_NEEDED sonames of one ELF64 little-endian file ([] for a static binary)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit(f"build image: {path} is not an ELF64 little-endian file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []   # (vaddr, offset, filesz)
    dyn: tuple[int, int] | None = None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dyn = (p_offset, p_filesz)
    if dyn is None:
        return []
    entries = [struct.unpack_from("<qQ", data, dyn[0] + k) for k in range(0, dyn[1], 16)]
    strtab = next(v for t, v in entries if t == DT_STRTAB)
    base = next(off + strtab - va for va, off, size in loads if va <= strtab < va + size)
    names = []
    for t, v in entries:
        if t == DT_NEEDED:
            end = data.index(b"\0", base + v)
            names.append(data[base + v:end].decode())
    return names


def closure(tree: Path, binaries: Iterable[Path]) -> list[tuple[str, str]]:
    """Every (library directory, soname) the binaries need, transitively, found in ``tree``."""
    found: dict[str, str] = {}
    todo = [n for b in binaries for n in needed(b)]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        d = next((d for d in LIB_DIRS if (tree / d / name).exists()), None)
        if d is None:
            raise SystemExit(f"build image: no package in the build provides {name} (add it to the list)")
        found[name] = d
        todo.extend(needed((tree / d / name).resolve()))
    return sorted((d, n) for n, d in found.items())
