"""Inspection decisions on canned ``qemu-img info --output=json`` documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.errors import UnsafeImage
from storage.inspect import check_info
from zsutil.imagecheck import ImageInfo


def info(**kw: Any) -> ImageInfo:
    d: dict[str, Any] = {
        "filename": "/c/img",
        "format": "qcow2",
        "virtual-size": 1 << 30,
        "actual-size": 4096,
        "format-specific": {"type": "qcow2", "data": {"corrupt": False}},
    }
    d.update(kw)
    return ImageInfo.from_json(d)


def test_plain_qcow2_and_raw_pass() -> None:
    assert check_info(info(), image="i", expected="qcow2") == "qcow2"
    assert check_info(info(format="raw"), image="i", expected="raw") == "raw"
    assert check_info(info(format="raw"), image="i", iso_signature=True, expected="iso") == "iso"
    assert check_info(info(format="raw"), image="i", iso_signature=True, expected="raw") == "raw"


def test_backing_file_etc_passwd() -> None:
    with pytest.raises(UnsafeImage) as e:
        check_info(
            info(**{"backing-filename": "/etc/passwd", "full-backing-filename": "/etc/passwd"}), image="i"
        )
    assert e.value.details == {"field": "backing-filename", "value": "/etc/passwd"}


def test_json_backing_and_json_filename() -> None:
    name = 'json:{"file":{"driver":"file","filename":"/etc/shadow"}}'
    with pytest.raises(UnsafeImage, match="json: pseudo-protocol"):
        check_info(info(**{"backing-filename": name}), image="i", allowed_roots=[Path("/c")])
    with pytest.raises(UnsafeImage, match="'filename'"):
        check_info(info(filename=name), image="i")


def test_external_data_file() -> None:
    d = {"type": "qcow2", "data": {"data-file": "/dev/sda", "data-file-raw": True}}
    with pytest.raises(UnsafeImage) as e:
        check_info(info(**{"format-specific": d}), image="i")
    assert e.value.details["field"] == "data-file"


def test_formats() -> None:
    with pytest.raises(UnsafeImage, match="'vmdk'"):
        check_info(info(format="vmdk"), image="i")
    with pytest.raises(UnsafeImage, match="declared 'qcow2' but the file is 'iso'"):
        check_info(info(format="raw"), image="i", iso_signature=True, expected="qcow2")
    with pytest.raises(UnsafeImage, match="declared 'iso' but the file is 'raw'"):
        check_info(info(format="raw"), image="i", expected="iso")
    with pytest.raises(UnsafeImage, match="not allowed"):
        check_info(info(), image="i", expected="vhd")
    with pytest.raises(UnsafeImage, match="corrupt"):
        check_info(info(**{"format-specific": {"data": {"corrupt": True}}}), image="i")


def test_storage_images_may_have_backing_inside_roots(tmp_path: Path) -> None:
    inside = str(tmp_path / "ps" / "imagecache" / "x.qcow2")
    ok = info(**{"backing-filename": inside, "full-backing-filename": inside})
    assert check_info(ok, image="i", allowed_roots=[tmp_path / "ps"]) == "qcow2"
    for bad in ["/etc/passwd", f"{tmp_path}/ps/../etc", "relative.qcow2", "nbd:127.0.0.1:1"]:
        with pytest.raises(UnsafeImage):
            check_info(info(**{"backing-filename": bad}), image="i", allowed_roots=[tmp_path / "ps"])
