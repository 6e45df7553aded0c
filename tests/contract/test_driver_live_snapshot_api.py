"""The controller's snapshot rules by VM state, against two in-process agents on libvirt's test driver (which
cannot take live snapshots): CreateVolumeSnapshot of a Running VM's volume reaches the agent and comes back as
a VM.1010 that names the missing capability; Starting/Stopping/Migrating/Unknown are refused before any
agent call; revert and delete need the VM Stopped and say why. The live success path on real QEMU is in
tests/e2e/test_live_snapshot.py."""

from __future__ import annotations

import test_controller_compute as tcc
from test_controller_compute import Env

env = tcc.env  # the fixture: a controller, two connected in-process agents, a local PS attached


async def _set_state(e: Env, vm_uuid: str, state: str) -> None:
    async with e.core.db.write() as tx:
        await tx.execute("UPDATE VmInstance SET state=? WHERE uuid=?", (state, vm_uuid))


async def test_snapshot_rules_by_vm_state(env: Env) -> None:
    e = env
    status, body = await e.create_vm("vm1")
    assert status == 200, body
    vm = body["inventory"]
    root = vm["rootVolumeUuid"]
    tag = await e.core.db.fetchone("SELECT 1 FROM SystemTag WHERE resourceUuid=? AND tag='capability:liveSnapshot'",
                                   (vm["hostUuid"],))
    assert tag is None, "a test-driver host does not claim live snapshots"
    status, body = await e.raw("CreateVolumeSnapshot", volumeUuid=root, name="s")
    assert status == 409 and body["error"]["code"] == "VM.1010", body
    assert "capability:liveSnapshot" in body["error"]["details"], body
    assert body["error"]["cause"]["code"] == "VM.LIVE_SNAPSHOT_UNSUPPORTED", body
    for state in ("Starting", "Stopping", "Migrating", "Unknown"):
        await _set_state(e, vm["uuid"], state)
        status, body = await e.raw("CreateVolumeSnapshot", volumeUuid=root, name="s")
        assert status == 409 and body["error"]["code"] == "VM.1010" and state in body["error"]["details"], body
    assert await e.core.db.fetchone("SELECT 1 FROM VolumeSnapshot") is None
    await _set_state(e, vm["uuid"], "Running")
    await e.call("StopVmInstance", uuid=vm["uuid"])
    snap = await e.inv("CreateVolumeSnapshot", volumeUuid=root, name="s")  # offline
    assert snap["volumeUuid"] == root and snap["latest"]
    await e.call("StartVmInstance", uuid=vm["uuid"])
    for api, words in (("RevertVolumeFromSnapshot", "ZStack 1.0"), ("DeleteVolumeSnapshot", "merged")):
        status, body = await e.raw(api, uuid=snap["uuid"])
        assert status == 409 and body["error"]["code"] == "VM.1010" and words in body["error"]["details"], body
