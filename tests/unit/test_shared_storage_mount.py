"""Shared primary storage on the host side (storage/shared.py), at unit level.

The NFS mount path is tested HERE ONLY: the lab kernel has neither ``nfs`` nor ``nfsd``, so no NFS server can run
and no export can be mounted on this machine (the e2e tests use a SharedMountPoint storage instead). What is
checked: the url rules, the mount/umount argv (a list, never a shell string), ``/proc/mounts`` parsing (octal
escapes, the visible entry), idempotence when the same source is mounted, refusal of a path occupied by another
file system, and the mapping of a failing mount to an error naming the url and the path. The command runner is
replaced by a recorder so nothing runs on this host. Then the same-file-system check of a shared directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from storage import shared
from storage.errors import Conflict, InvalidArgument, NotFound
from zsutil import nfsurl, runner


def test_nfs_url_rules() -> None:
    assert str(shared.parse_nfs_url("192.168.0.220:/storage/nfs")) == "192.168.0.220:/storage/nfs"
    assert str(shared.parse_nfs_url("nfs.example.com:/export/")) == "nfs.example.com:/export"
    for bad in ("/storage/nfs", "host:", "host:relative", "host:/a/../etc", "-o:/x", "a b:/x", "h:/a:b", "h://a",
                "h:/a b", "[::1]:/x", ""):
        with pytest.raises(InvalidArgument) as e:
            shared.parse_nfs_url(bad)
        assert e.value.details["field"] == "url" and e.value.details["value"] == bad
        assert "host:/absolute/path" in str(e.value)
    with pytest.raises(ValueError, match="allowed"):
        nfsurl.parse("nohost")


def test_mount_and_umount_argv() -> None:
    assert shared.mount_argv("10.0.0.5:/exp", "/opt/zstack/nfsprimarystorage/prim-abc") == [
        "mount", "-t", "nfs", "10.0.0.5:/exp", "/opt/zstack/nfsprimarystorage/prim-abc"]
    assert shared.mount_argv("10.0.0.5:/exp/./a/", "/mnt/p/", "vers=4.1,soft,timeo=600") == [
        "mount", "-t", "nfs", "-o", "vers=4.1,soft,timeo=600", "10.0.0.5:/exp/a", "/mnt/p"]
    with pytest.raises(InvalidArgument) as e:
        shared.mount_argv("10.0.0.5:/exp", "/mnt/p", "vers=4;rm -rf /")
    assert e.value.details["field"] == "mountOptions"
    with pytest.raises(InvalidArgument):
        shared.mount_argv("10.0.0.5:/exp", "relative")
    assert shared.umount_argv("/mnt/p/") == ["umount", "-f", "-l", "/mnt/p"]


MOUNTS = """proc /proc proc rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
10.0.0.5:/exp /opt/zstack/nfsprimarystorage/prim-aaa nfs4 rw,vers=4.1,addr=10.0.0.5 0 0
tmpfs /mnt/with\\040space tmpfs rw 0 0
/dev/sdb1 /mnt/busy ext4 rw 0 0
10.0.0.6:/other /mnt/busy nfs rw 0 0
broken-line
"""


def test_parse_proc_mounts() -> None:
    entries = shared.parse_mounts(MOUNTS)
    assert len(entries) == 6  # the malformed line is skipped
    assert shared.mounted_at(entries, "/mnt/with space") == shared.MountEntry("tmpfs", "/mnt/with space", "tmpfs",
                                                                              "rw")
    top = shared.mounted_at(entries, "/mnt/busy/")
    assert top is not None and top.source == "10.0.0.6:/other"  # the one mounted last is the visible one
    assert shared.mounted_at(entries, "/nowhere") is None
    nfs = shared.mounted_at(entries, "/opt/zstack/nfsprimarystorage/prim-aaa")
    assert nfs is not None and shared.same_source(nfs, shared.parse_nfs_url("10.0.0.5:/exp/"))
    assert not shared.same_source(nfs, shared.parse_nfs_url("10.0.0.5:/exp2"))


class Recorder:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def __call__(self, argv: list[str], **kw: Any) -> runner.Result:
        assert isinstance(argv, list) and kw["timeout"] > 0
        self.calls.append(argv)
        if self.fail:
            raise runner.ProcessError(argv, 32, "", self.fail)
        return runner.Result(tuple(argv), 0, "", "")


async def test_mount_nfs_idempotent_occupied_and_failing(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    target = tmp_path / "base" / "prim-aaa"
    mounts.write_text(f"10.0.0.5:/exp {target} nfs4 rw 0 0\n")
    rec = Recorder()
    # mounted from the same source already: nothing runs
    assert await shared.mount_nfs("10.0.0.5:/exp", str(target), mounts_file=str(mounts), run=rec) is False
    assert rec.calls == []
    # occupied by another file system: refused, naming what occupies it
    mounts.write_text(f"/dev/sdc1 {target} ext4 rw 0 0\n")
    with pytest.raises(Conflict, match="occupied by another device") as e:
        await shared.mount_nfs("10.0.0.5:/exp", str(target), mounts_file=str(mounts), run=rec)
    assert e.value.details["occupiedBy"] == "/dev/sdc1" and rec.calls == []
    # not mounted: the directory is made and mount runs with the argv
    mounts.write_text("")
    assert await shared.mount_nfs("10.0.0.5:/exp", str(target), options="vers=4.1", mounts_file=str(mounts),
                                  run=rec) is True
    assert target.is_dir()
    assert rec.calls == [["mount", "-t", "nfs", "-o", "vers=4.1", "10.0.0.5:/exp", str(target)]]
    # mount fails: the error names the url, the path and mount's own reason; the directories it made are removed
    target.rmdir()
    target.parent.rmdir()
    bad = Recorder(fail="mount.nfs: Connection timed out")
    with pytest.raises(shared.MountFailed) as e2:
        await shared.mount_nfs("10.0.0.5:/exp", str(target), mounts_file=str(mounts), run=bad)
    msg = str(e2.value)
    assert "10.0.0.5:/exp" in msg and str(target) in msg and "Connection timed out" in msg
    assert e2.value.status == 502 and e2.value.code == "STORAGE.MOUNT_FAILED"
    assert e2.value.details == {"field": "url", "value": "10.0.0.5:/exp", "mountPath": str(target)}
    assert not target.parent.exists()


async def test_unmount_nfs(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("")
    rec = Recorder()
    assert await shared.unmount_nfs(str(tmp_path / "p"), mounts_file=str(mounts), run=rec) is False
    mounts.write_text(f"10.0.0.5:/exp {tmp_path / 'p'} nfs rw 0 0\n")
    assert await shared.unmount_nfs(str(tmp_path / "p"), mounts_file=str(mounts), run=rec) is True
    assert rec.calls == [["umount", "-f", "-l", str(tmp_path / "p")]]
    with pytest.raises(shared.MountFailed, match="cannot unmount"):
        await shared.unmount_nfs(str(tmp_path / "p"), mounts_file=str(mounts), run=Recorder(fail="busy"))


def test_shared_dir_same_file_system_marker(tmp_path: Path) -> None:
    d = tmp_path / "smp"
    with pytest.raises(NotFound, match="does not exist on this host"):
        shared.check_shared_dir(str(d), "ps1", "h1", create_marker=True, kind="SharedMountPoint")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgument, match="not a directory"):
        shared.check_shared_dir(str(tmp_path / "file"), "ps1", "h1", create_marker=True, kind="SharedMountPoint")
    d.mkdir()
    # a later host finding no marker sees another file system: refused, saying so
    with pytest.raises(shared.NotShared, match="does not see the same shared file system") as e:
        shared.check_shared_dir(str(d), "ps1", "h2", create_marker=False, kind="SharedMountPoint")
    assert e.value.status == 409 and not (d / ".zstack-ps.json").exists()
    # the first host writes it; later hosts find it
    assert shared.check_shared_dir(str(d), "ps1", "h1", create_marker=True, kind="SharedMountPoint") == d
    marker = json.loads((d / ".zstack-ps.json").read_text())
    assert marker == {"primaryStorageUuid": "ps1", "hostUuid": "h1", "shared": True, "type": "SharedMountPoint"}
    assert shared.check_shared_dir(str(d), "ps1", "h2", create_marker=False, kind="SharedMountPoint") == d
    assert shared.is_shared_root(d)
    assert sorted(p.name for p in d.iterdir()) == [".zstack-ps.json"]  # the write probe is gone
    # another storage's directory, or a local storage's: refused
    with pytest.raises(Conflict, match="already primary storage ps1"):
        shared.check_shared_dir(str(d), "ps2", "h1", create_marker=True, kind="SharedMountPoint")
    local = tmp_path / "local"
    local.mkdir()
    (local / ".zstack-ps.json").write_text(json.dumps({"primaryStorageUuid": "ps3", "hostUuid": "h1"}))
    with pytest.raises(Conflict, match="local primary storage"):
        shared.check_shared_dir(str(local), "ps3", "h1", create_marker=True, kind="SharedMountPoint")
    assert not shared.is_shared_root(local)
    with pytest.raises(InvalidArgument):
        shared.check_shared_dir(str(d), "../x", "h1", create_marker=True, kind="SharedMountPoint")
