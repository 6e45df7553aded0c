"""Issue 18, security 9: an image's header and magic are checked before qemu-img ever runs on it (agent:
``storage.inspect.check_header`` in ``inspect_image``; backup storage: ``controller.backup.inspect``), and
qemu-img is then told the format instead of probing it."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from controller.backup import inspect as bs_inspect
from storage import inspect as agent_inspect
from storage import qemuimg
from storage.errors import UnsafeImage


def qcow2(version: int = 3, backing: int = 0, crypt: int = 0, incompatible: int = 0) -> bytes:
    head = bytearray(4096)
    struct.pack_into(">4sIQIIQI", head, 0, b"QFI\xfb", version, backing, 12 if backing else 0, 16, 1 << 30, crypt)
    struct.pack_into(">Q", head, 72, incompatible)
    return bytes(head)


BAD = [(qcow2(backing=512), "qcow2", "backing"), (qcow2(incompatible=0x4), "qcow2", "data"),
       (qcow2(crypt=1), "qcow2", "encrypt"), (qcow2(version=7), "qcow2", "version"),
       (b"# Disk DescriptorFile\nRW 8 FLAT \"/etc/shadow\" 0\n", "raw", "vmdk"), (b"KDMV" + bytes(600), "raw", "vmdk"),
       (b"QED\x00" + bytes(600), "raw", "qed"), (b"LUKS\xba\xbe" + bytes(600), "raw", "luks"),
       (qcow2(), "raw", "qcow2"), (bytes(4096), "qcow2", "qcow2")]


@pytest.mark.parametrize("head,declared,word", BAD)
def test_bad_headers_refused_by_both_checks(head: bytes, declared: str, word: str) -> None:
    with pytest.raises(UnsafeImage, match=word):
        agent_inspect.check_header(head, image="u", expected=declared)
    with pytest.raises(bs_inspect.UnsafeImage, match=word):
        bs_inspect.check_header(head, url="u", declared=declared)


def test_good_headers() -> None:
    for head, declared, fmt in [(qcow2(), "qcow2", "qcow2"), (qcow2(version=2), "qcow2", "qcow2"),
                                (bytes(4096), "raw", "raw"), (bytes(4096), "iso", "raw")]:
        assert agent_inspect.check_header(head, image="u", expected=declared) == fmt
        assert bs_inspect.check_header(head, url="u", declared=declared) == fmt
    # images the storage made itself may have a backing file (checked afterwards against the roots)
    assert agent_inspect.check_header(qcow2(backing=512), image="u", expected=None, self_contained=False) == "qcow2"


async def test_qemu_img_never_runs_on_a_refused_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    async def spy(*a: Any, **kw: Any) -> Any:
        calls.append((a, kw))
        raise AssertionError("qemu-img info ran")

    monkeypatch.setattr(qemuimg, "info", spy)
    evil = tmp_path / "evil.img"
    evil.write_bytes(b'# Disk DescriptorFile\nversion=1\nRW 8 FLAT "/etc/shadow" 0\n')
    with pytest.raises(UnsafeImage, match="vmdk"):
        await agent_inspect.inspect_image(evil, expected="raw")
    assert calls == []
