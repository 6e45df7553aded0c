"""Path derivation of the local primary storage layout (ZStack 1.0 §3.5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.errors import InvalidArgument
from storage.layout import LocalLayout, VolumeType, partial_path, snapshot_path


def test_paths_follow_the_1_0_layout() -> None:
    lay = LocalLayout.of("/data/ps/")
    assert lay.root == Path("/data/ps")
    assert lay.volume_path(VolumeType.ROOT, "a1", "v1") == Path(
        "/data/ps/rootVolumes/acct-a1/vol-v1/v1.qcow2"
    )
    assert lay.volume_path(VolumeType.DATA, "a1", "v2") == Path(
        "/data/ps/dataVolumes/acct-a1/vol-v2/v2.qcow2"
    )
    assert lay.template_cache("i1") == Path("/data/ps/imagecache/template/i1/i1.qcow2")
    assert lay.iso_cache("i2") == Path("/data/ps/imagecache/iso/i2/i2.iso")
    assert lay.image_cache("i2", "iso") == lay.iso_cache("i2")
    vol = lay.volume_path(VolumeType.ROOT, "a1", "v1")
    assert snapshot_path(vol, "s1") == Path("/data/ps/rootVolumes/acct-a1/vol-v1/snapshots/s1.qcow2")
    assert partial_path(vol).name == "v1.qcow2.partial"
    assert LocalLayout.of("file:///data/ps").root == Path("/data/ps")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 65, "a b", ".."])
def test_identifiers_cannot_escape(bad: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        LocalLayout.of("/data/ps").volume_path(VolumeType.ROOT, "a1", bad)
    assert e.value.details["field"] == "volumeUuid"


@pytest.mark.parametrize("url", ["relative/ps", "/", "", "/a\0b"])
def test_bad_storage_path(url: str) -> None:
    with pytest.raises(InvalidArgument, match="storagePath"):
        LocalLayout.of(url)


def test_contain_rejects_paths_outside(tmp_path: Path) -> None:
    lay = LocalLayout.of(tmp_path / "ps")
    (tmp_path / "ps").mkdir()
    assert lay.contain(f"{tmp_path}/ps/rootVolumes/x.qcow2") == tmp_path / "ps/rootVolumes/x.qcow2"
    for bad in ["/etc/passwd", f"{tmp_path}/ps/../other", f"{tmp_path}/ps", "rel/path"]:
        with pytest.raises(InvalidArgument):
            lay.contain(bad)
    (tmp_path / "ps" / "link").symlink_to("/etc")
    with pytest.raises(InvalidArgument, match="outside"):
        lay.contain(f"{tmp_path}/ps/link/passwd")
