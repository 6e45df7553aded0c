"""The controller-side image checks over canned ``qemu-img info`` JSON, and sftp urls for the agent."""

from __future__ import annotations

from typing import Any

import pytest

from controller.backup.cache import sftp_url
from controller.backup.inspect import UnsafeImage, check_info

QCOW2: dict[str, Any] = {"format": "qcow2", "virtual-size": 1 << 20, "filename": "/bs/i.qcow2",
                         "format-specific": {"type": "qcow2", "data": {"corrupt": False}}}


def test_clean_qcow2_and_iso() -> None:
    assert check_info(QCOW2, url="u", declared="qcow2", iso_signature=False).format == "qcow2"
    raw = {"format": "raw", "virtual-size": 4096, "filename": "/bs/x"}
    assert check_info(raw, url="u", declared="iso", iso_signature=True).format == "iso"
    assert check_info(raw, url="u", declared="raw", iso_signature=True).format == "raw"


@pytest.mark.parametrize("change,words", [
    ({"backing-filename": "/etc/passwd"}, ("backing-filename", "/etc/passwd")),
    ({"full-backing-filename": 'json:{"file":{}}'}, ("full-backing-filename", "json:")),
    ({"filename": "json:{}"}, ("filename", "json:")),
    ({"format-specific": {"data": {"data-file": "/dev/sda"}}}, ("data-file", "/dev/sda")),
    ({"format-specific": {"data": {"corrupt": True}}}, ("corrupt",)),
    ({"format": "vmdk"}, ("vmdk",)),
    ({"virtual-size": 0}, ("virtual-size",)),
])
def test_unsafe_info_is_rejected(change: dict[str, Any], words: tuple[str, ...]) -> None:
    with pytest.raises(UnsafeImage) as e:
        check_info({**QCOW2, **change}, url="http://x/i", declared="qcow2", iso_signature=False)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_declared_format_must_match() -> None:
    with pytest.raises(UnsafeImage, match="declared 'raw' but the file is 'qcow2'"):
        check_info(QCOW2, url="u", declared="raw", iso_signature=False)
    with pytest.raises(UnsafeImage, match="declared 'iso'"):
        check_info({"format": "raw", "virtual-size": 1}, url="u", declared="iso", iso_signature=False)


def test_sftp_url_quotes_user_and_path_and_carries_no_password() -> None:
    bs = {"username": "ro ot", "password": "p@ss:/w", "hostname": "10.0.0.5", "sshPort": 2222}
    assert sftp_url(bs, "/bs/images/a b.qcow2") == "sftp://ro%20ot@10.0.0.5:2222/bs/images/a%20b.qcow2"
