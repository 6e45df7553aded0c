"""The boot media: a BIOS disk (MBR + one FAT16 partition + syslinux) as qcow2, and an isolinux ISO.

Both carry the same vmlinuz + initrd.img; the kernel command line says which medium it came from
(``tiny.boot=disk`` / ``tiny.boot=cdrom``). No mount, no loop device: mtools writes the FAT.
Reproducible: fixed FAT serial, fixed MBR disk id, ``--invariant`` mkfs, SOURCE_DATE_EPOCH in ``env``.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

PART_START = 2048            # sectors: the partition starts at 1 MiB
DISK_ID = 0x7E1E0001         # MBR disk signature; also the FAT volume serial
SLACK_MIB = 2                # free space left in the FAT partition


def _run(env: Mapping[str, str], *argv: str | Path) -> None:
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=dict(env))
    if r.returncode != 0:
        raise SystemExit(f"build-tiny-image: {' '.join(map(str, argv))!r} failed (exit {r.returncode}):\n"
                         f"{(r.stderr or r.stdout).strip()}")


def _pin_mtimes(env: Mapping[str, str], *paths: Path) -> None:
    """mcopy -m and xorriso copy file mtimes: pin them (recursively) to SOURCE_DATE_EPOCH."""
    t = int(env["SOURCE_DATE_EPOCH"])
    for p in paths:
        for q in [p, *p.rglob("*")] if p.is_dir() else [p]:
            os.utime(q, (t, t), follow_symlinks=False)


def syslinux_cfg(cmdline: str, boot: str) -> str:
    return (f"DEFAULT tiny\nPROMPT 0\nTIMEOUT 0\nLABEL tiny\n  LINUX /vmlinuz\n  INITRD /initrd.img\n"
            f"  APPEND {cmdline} tiny.boot={boot}\n")


def _chs(lba: int) -> bytes:
    """CHS address in a 255-head, 63-sector geometry, clamped to 1023/254/63 (LBA is authoritative)."""
    c, rem = divmod(lba, 255 * 63)
    h, s = divmod(rem, 63)
    if c > 1023:
        c, h, s = 1023, 254, 62
    return bytes([h, ((s + 1) & 0x3F) | ((c >> 2) & 0xC0), c & 0xFF])


def mbr(boot_code: bytes, start: int, sectors: int) -> bytes:
    """Sector 0: syslinux's mbr.bin, disk id, one bootable FAT16 (type 0x06) partition."""
    entry = bytes([0x80]) + _chs(start) + bytes([0x06]) + _chs(start + sectors - 1) + \
        struct.pack("<II", start, sectors)
    return boot_code[:440].ljust(440, b"\0") + struct.pack("<IH", DISK_ID, 0) + entry + \
        b"\0" * 48 + b"\x55\xaa"


def _mib(*files: Path) -> int:
    return -(-sum(f.stat().st_size for f in files) // (1 << 20))


def build_qcow2(work: Path, final: Path, tools: Path, env: Mapping[str, str], cmdline: str) -> None:
    """``final/tiny.qcow2``: the FAT partition is made in a file, then laid into the raw disk."""
    part, raw = work / "part.img", work / "disk.img"
    (work / "syslinux.cfg").write_text(syslinux_cfg(cmdline, "disk"))
    payload = [final / "vmlinuz", final / "initrd.img", work / "syslinux.cfg"]
    part_mib = _mib(*payload) + SLACK_MIB
    with part.open("wb") as f:
        f.truncate(part_mib << 20)
    _run(env, "mkfs.fat", "-F", "16", "-h", str(PART_START), "-n", "TINYBOOT", "-i", f"{DISK_ID:08x}",
         "--invariant", part)
    _pin_mtimes(env, *payload)
    _run(env, "mcopy", "-m", "-i", part, *payload, "::/")
    _run(env, "syslinux", "--install", part)
    sectors = (part_mib << 20) // 512
    with raw.open("wb") as f:
        f.write(mbr((tools / "usr/lib/syslinux/mbr/mbr.bin").read_bytes(), PART_START, sectors))
        f.seek(PART_START * 512)
        with part.open("rb") as p:
            shutil.copyfileobj(p, f, 1 << 20)
    _run(env, "qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", raw, final / "tiny.qcow2")


def build_iso(work: Path, final: Path, tools: Path, env: Mapping[str, str], cmdline: str) -> None:
    """``final/tiny.iso``: El Torito isolinux, isohybrid MBR (also boots as a disk), Rock Ridge + Joliet."""
    iso = work / "iso"
    (iso / "isolinux").mkdir(parents=True)
    shutil.copyfile(tools / "usr/lib/ISOLINUX/isolinux.bin", iso / "isolinux/isolinux.bin")
    shutil.copyfile(tools / "usr/lib/syslinux/modules/bios/ldlinux.c32", iso / "isolinux/ldlinux.c32")
    shutil.copyfile(final / "vmlinuz", iso / "vmlinuz")
    shutil.copyfile(final / "initrd.img", iso / "initrd.img")
    (iso / "isolinux/isolinux.cfg").write_text(syslinux_cfg(cmdline, "cdrom"))
    _pin_mtimes(env, iso)
    _run(env, "xorriso", "-as", "mkisofs", "-quiet", "-o", final / "tiny.iso", "-V", "TINYIMG", "-J", "-r",
         "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
         "-boot-info-table", "-isohybrid-mbr", tools / "usr/lib/ISOLINUX/isohdpfx.bin", iso)
