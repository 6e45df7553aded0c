"""Agent side of live migration without a hypervisor: the domain XML sent to the destination (console listener
and metadata host address retargeted, nothing else changed), the URIs and flags, the judger's time-bound
expectation for an incoming domain, and the wire contract's refusals."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest
from pydantic import ValidationError

from kvmagent.contract import migrate as mc
from kvmagent.driver import migration
from kvmagent.driver.base import VmState
from kvmagent.driver.xml.domain import build_domain_xml
from kvmagent.driver.xml.edit import graphics, metadata
from kvmagent.events import Judger

GOLDEN = Path(__file__).parent / "golden"


def _spec():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(GOLDEN))
    from variants import MINIMAL

    return replace(MINIMAL, console_password="Ab3dEf7h")


def test_retarget_xml_moves_console_and_metadata_only() -> None:
    xml = build_domain_xml(_spec(), domain_type="qemu", console_log=Path("/var/lib/zstack-py/console/x.log"))
    out = migration.retarget_xml(xml, "10.0.0.12")
    dom, before = ET.fromstring(out), ET.fromstring(xml)
    g = graphics(dom)
    assert g is not None and g.listen == "10.0.0.12" and g.password == "Ab3dEf7h"
    assert all(lst.get("address") == "10.0.0.12" for lst in dom.findall("devices/graphics/listen"))
    meta = metadata(dom)
    assert meta is not None and meta.management_ip == "10.0.0.12"
    assert meta.fingerprint == metadata(before).fingerprint  # type: ignore[union-attr]
    for path in ("devices/disk/source", "devices/interface/target", "devices/interface/mac", "devices/serial"):
        assert [ET.tostring(e) for e in dom.findall(path)] == [ET.tostring(e) for e in before.findall(path)]


def test_uris_and_flags() -> None:
    assert migration.dest_uris("10.0.0.12") == ("qemu+tcp://10.0.0.12/system", "tcp://10.0.0.12")
    assert migration.dest_uris("fd00::2") == ("qemu+tcp://[fd00::2]/system", "tcp://[fd00::2]")
    base = migration.flags(False)
    for f in (libvirt.VIR_MIGRATE_LIVE, libvirt.VIR_MIGRATE_PEER2PEER, libvirt.VIR_MIGRATE_PERSIST_DEST,
              libvirt.VIR_MIGRATE_UNDEFINE_SOURCE):
        assert base & f
    assert not base & (libvirt.VIR_MIGRATE_NON_SHARED_INC | libvirt.VIR_MIGRATE_NON_SHARED_DISK)
    assert not base & libvirt.VIR_MIGRATE_TUNNELLED
    # shared storage (no copy): libvirt's own shared-file-system list does not decide (a SharedMountPoint)
    assert base & libvirt.VIR_MIGRATE_UNSAFE
    assert migration.flags(True) == migration.FLAGS | libvirt.VIR_MIGRATE_NON_SHARED_INC


def test_judger_expectation_for_an_incoming_domain_is_time_bound() -> None:
    now = [100.0]
    j = Judger(ttl=10.0, clock=lambda: now[0])
    vm = "a" * 32
    j.expect_for(vm, {VmState.RUNNING, VmState.PAUSED}, 300)
    assert j.swallows(vm, VmState.RUNNING) and j.swallows(vm, VmState.PAUSED)
    assert not j.swallows(vm, VmState.CRASHED)
    now[0] += 299
    assert j.swallows(vm, VmState.RUNNING)
    now[0] += 2
    assert not j.swallows(vm, VmState.RUNNING)
    j.expect_for(vm, {VmState.RUNNING}, 300)
    j.settle(vm)  # the migration ended: back to the short ttl
    now[0] += 11
    assert not j.swallows(vm, VmState.RUNNING)


@pytest.mark.parametrize("bad", [
    {"destHostIp": "10.0.0.1; rm -rf /"},
    {"destHostIp": ""},
    {"uuid": "not-a-uuid"},
    {"timeout": 0},
])
def test_migrate_cmd_refuses_bad_input(bad: dict[str, object]) -> None:
    body = {"uuid": "a" * 32, "destHostIp": "10.0.0.2", **bad}
    with pytest.raises(ValidationError):
        mc.MigrateVmCmd.model_validate(body)


def test_prepare_cmd_refuses_relative_paths_and_unknown_fields() -> None:
    ok = {"uuid": "a" * 32, "storagePath": "/ps", "disks": [{"path": "/ps/x.qcow2", "size": 1}]}
    mc.PrepareMigrationCmd.model_validate(ok)
    for disk in ({"path": "x.qcow2", "size": 1}, {"path": "/ps/x", "size": 0},
                 {"path": "/ps/x", "size": 1, "backingFile": "../b"}, {"path": "/ps/x", "size": 1, "mode": "x"}):
        with pytest.raises(ValidationError):
            mc.PrepareMigrationCmd.model_validate({**ok, "disks": [disk]})


def test_progress_from_job_stats() -> None:
    MiB = 1 << 20
    running = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "time_elapsed": 3200, "data_total": 192 * MiB,
               "data_processed": 150 * MiB, "data_remaining": 48 * MiB, "memory_total": 128 * MiB,
               "memory_processed": 140 * MiB, "memory_remaining": 16 * MiB, "disk_total": 64 * MiB,
               "disk_processed": 32 * MiB, "disk_remaining": 32 * MiB, "memory_dirty_rate": 7}
    p = migration.progress_from_stats(running)
    assert p == {"dataTotal": 192 * MiB, "dataProcessed": 150 * MiB, "dataRemaining": 48 * MiB,
                 "memoryTotal": 128 * MiB, "memoryProcessed": 140 * MiB, "memoryRemaining": 16 * MiB,
                 "diskTotal": 64 * MiB, "diskProcessed": 32 * MiB, "diskRemaining": 32 * MiB, "elapsedMs": 3200,
                 "percent": 75}  # (total - remaining) / total: re-sent dirty memory does not count twice
    # nothing left but the job still runs (switch-over): below 100; no remaining figure: processed, capped
    assert migration.progress_from_stats({"data_total": 10, "data_remaining": 0})["percent"] == 99
    assert migration.progress_from_stats({"data_total": 100, "data_processed": 30})["percent"] == 30
    assert migration.progress_from_stats({"data_total": 100, "data_processed": 300})["percent"] == 99
    # the job has not sized itself yet, or a field is missing / bogus: no percent, no such field
    assert migration.progress_from_stats({"type": 2, "data_total": 0}) == {"dataTotal": 0}
    assert migration.progress_from_stats({"memory_total": -1, "disk_total": "x"}) == {}


def test_progress_reply_contract() -> None:
    reply = mc.MigrationProgressReply(running=True, **migration.progress_from_stats({"data_total": 4,
                                                                                     "data_remaining": 1}))
    assert (reply.running, reply.percent, reply.dataTotal, reply.memoryTotal) == (True, 75, 4, None)
    with pytest.raises(ValidationError):
        mc.MigrationProgressCmd(uuid="not-a-uuid")
    assert mc.MigrationProgressCmd.PATH == "/vm/migrate/progress"
