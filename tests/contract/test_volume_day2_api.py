"""Day-2 volume and snapshot APIs against two real in-process agents: UpdateVolume, ChangeVolumeState,
UpdateVolumeSnapshot, the snapshot trees (Get/Query) and the attachable lists, which must list exactly what
AttachDataVolumeToVm accepts."""

from __future__ import annotations

from typing import Any

import test_controller_compute as tcc
from test_controller_compute import Env

env = tcc.env
MiB = 1 << 20


async def _refused(e: Env, api_name: str, status: int, code: str, /, *needles: str, **kw: Any) -> None:
    got, body = await e.raw(api_name, **kw)
    assert got == status and body["error"]["code"] == code, body
    for n in needles:
        assert n in body["error"]["details"], (n, body)


async def _uuids(e: Env, api_name: str, /, **kw: Any) -> list[str]:
    return [i["uuid"] for i in (await e.call(api_name, **kw))["inventories"]]


async def test_update_and_change_state(env: Env) -> None:
    e = env
    vm = (await e.create_vm("vm1"))[1]["inventory"]
    off = await e.inv("CreateDiskOffering", name="d", diskSize=8 * MiB)
    vol = await e.inv("CreateDataVolume", name="data", diskOfferingUuid=off["uuid"])
    v = await e.inv("UpdateVolume", uuid=vol["uuid"], name="renamed", description="logs")
    assert (v["name"], v["description"]) == ("renamed", "logs")
    await _refused(e, "UpdateVolume", 400, "SYS.1007", "name", uuid=vol["uuid"], name="")
    await _refused(e, "UpdateVolume", 404, "SYS.1003", "1" * 32, uuid="1" * 32, name="x")
    assert (await e.inv("ChangeVolumeState", uuid=vol["uuid"], stateEvent="disable"))["state"] == "Disabled"
    # a Disabled volume is neither listed nor attachable
    assert vol["uuid"] not in await _uuids(e, "GetVmAttachableDataVolume", vmInstanceUuid=vm["uuid"])
    await _refused(e, "AttachDataVolumeToVm", 409, "SYS.1006", "Disabled", vmInstanceUuid=vm["uuid"],
                   volumeUuid=vol["uuid"])
    assert (await e.inv("ChangeVolumeState", uuid=vol["uuid"], stateEvent="enable"))["state"] == "Enabled"
    await _refused(e, "ChangeVolumeState", 409, "SYS.1006", "not allowed to change state of root volume",
                   uuid=vm["rootVolumeUuid"], stateEvent="disable")
    await _refused(e, "ChangeVolumeState", 400, "SYS.1007", "stateEvent", uuid=vol["uuid"], stateEvent="maintain")
    root = await e.core.db.fetchone("SELECT state FROM Volume WHERE uuid=?", (vm["rootVolumeUuid"],))
    assert root["state"] == "Enabled"


async def test_attachable_lists_match_attach(env: Env) -> None:
    e = env
    status, body = await e.create_vm("a")
    assert status == 200, body
    a = body["inventory"]
    b = (await e.create_vm("b", hostUuid=next(h["uuid"] for h in await e.hosts() if h["uuid"] != a["hostUuid"])))
    assert b[0] == 200, b
    b_vm = b[1]["inventory"]
    assert b_vm["hostUuid"] != a["hostUuid"]
    off = await e.inv("CreateDiskOffering", name="d", diskSize=8 * MiB)
    fresh = await e.inv("CreateDataVolume", name="fresh", diskOfferingUuid=off["uuid"])
    on_a = await e.inv("CreateDataVolume", name="on-a", diskOfferingUuid=off["uuid"])
    await e.call("AttachDataVolumeToVm", vmInstanceUuid=a["uuid"], volumeUuid=on_a["uuid"])
    # attached: listed for nobody
    assert await _uuids(e, "GetDataVolumeAttachableVm", volumeUuid=on_a["uuid"]) == []
    assert on_a["uuid"] not in await _uuids(e, "GetVmAttachableDataVolume", vmInstanceUuid=b_vm["uuid"])
    await e.call("DetachDataVolumeFromVm", uuid=on_a["uuid"])
    # Ready on a's host: only a; NotInstantiated: both
    assert await _uuids(e, "GetDataVolumeAttachableVm", volumeUuid=on_a["uuid"]) == [a["uuid"]]
    # (lists in createDate order; two rows created in the same millisecond come in uuid order: compare as sets)
    assert set(await _uuids(e, "GetDataVolumeAttachableVm", volumeUuid=fresh["uuid"])) == {a["uuid"], b_vm["uuid"]}
    assert set(await _uuids(e, "GetVmAttachableDataVolume", vmInstanceUuid=a["uuid"])) == {fresh["uuid"], on_a["uuid"]}
    assert await _uuids(e, "GetVmAttachableDataVolume", vmInstanceUuid=b_vm["uuid"]) == [fresh["uuid"]]
    await _refused(e, "AttachDataVolumeToVm", 409, "SYS.1006", "LocalStorageMigrateVolume",
                   vmInstanceUuid=b_vm["uuid"], volumeUuid=on_a["uuid"])
    # root volumes are never listed
    assert await _uuids(e, "GetDataVolumeAttachableVm", volumeUuid=a["rootVolumeUuid"]) == []
    # what is listed is accepted
    for vol_uuid in await _uuids(e, "GetVmAttachableDataVolume", vmInstanceUuid=a["uuid"]):
        await e.call("AttachDataVolumeToVm", vmInstanceUuid=a["uuid"], volumeUuid=vol_uuid)
    assert await _uuids(e, "GetVmAttachableDataVolume", vmInstanceUuid=a["uuid"]) == []
    # a Stopped VM still qualifies; a Destroyed one is refused (VM.1010) and not listed
    await e.call("StopVmInstance", uuid=b_vm["uuid"])
    extra = await e.inv("CreateDataVolume", name="x", diskOfferingUuid=off["uuid"])
    assert set(await _uuids(e, "GetDataVolumeAttachableVm", volumeUuid=extra["uuid"])) == {a["uuid"], b_vm["uuid"]}
    await e.call("DestroyVmInstance", uuid=b_vm["uuid"])
    await _refused(e, "GetVmAttachableDataVolume", 409, "VM.1010", "Destroyed", vmInstanceUuid=b_vm["uuid"])
    assert await _uuids(e, "GetDataVolumeAttachableVm", volumeUuid=extra["uuid"]) == [a["uuid"]]
    await _refused(e, "GetVmAttachableDataVolume", 404, "SYS.1003", "vmInstanceUuid", vmInstanceUuid="2" * 32)
    await _refused(e, "GetDataVolumeAttachableVm", 404, "SYS.1003", "volumeUuid", volumeUuid="2" * 32)


def _shape(leaf: dict[str, Any]) -> Any:
    """(snapshot name, [children shapes]) of a leaf, for comparing trees."""
    inv = leaf["inventory"]
    return (inv["name"] if inv else None, [_shape(c) for c in leaf["children"]])


async def test_snapshot_trees_and_update(env: Env) -> None:
    e = env
    vm = (await e.create_vm("vm1"))[1]["inventory"]
    await e.call("StopVmInstance", uuid=vm["uuid"])
    root = vm["rootVolumeUuid"]
    s = [await e.inv("CreateVolumeSnapshot", volumeUuid=root, name=f"s{i}") for i in range(2)]
    await e.call("RevertVolumeFromSnapshot", uuid=s[0]["uuid"])
    s.append(await e.inv("CreateVolumeSnapshot", volumeUuid=root, name="s2"))   # a second child of s0
    trees = (await e.call("GetVolumeSnapshotTree", volumeUuid=root))["inventories"]
    assert len(trees) == 1
    t = trees[0]
    assert (t["uuid"], t["volumeUuid"], t["current"]) == (s[0]["treeUuid"], root, True)
    assert _shape(t["tree"]) == ("s0", [("s1", []), ("s2", [])])
    assert t["tree"]["parentUuid"] is None and t["tree"]["children"][0]["parentUuid"] == s[0]["uuid"]
    assert t["tree"]["children"][1]["inventory"]["latest"] is True
    # the query form: conditions on the tree, same nested leaves
    q = (await e.call("QueryVolumeSnapshotTree", conditions=[{"name": "volumeUuid", "op": "=", "value": root}]))
    assert q["inventories"] == trees
    by_tree = await e.call("GetVolumeSnapshotTree", treeUuid=t["uuid"])
    assert by_tree["inventories"] == trees
    assert (await e.call("QueryVolumeSnapshotTree", conditions=[{"name": "current", "op": "=", "value": "false"}])
            )["inventories"] == []
    # UpdateVolumeSnapshot renames; the tree shows it
    u = await e.inv("UpdateVolumeSnapshot", uuid=s[1]["uuid"], name="before-upgrade", description="d")
    assert (u["name"], u["description"]) == ("before-upgrade", "d")
    t = (await e.call("GetVolumeSnapshotTree", volumeUuid=root))["inventories"][0]
    assert _shape(t["tree"]) == ("s0", [("before-upgrade", []), ("s2", [])])
    await _refused(e, "UpdateVolumeSnapshot", 404, "SYS.1003", "3" * 32, uuid="3" * 32, name="x")
    await _refused(e, "GetVolumeSnapshotTree", 400, "SYS.1007", "either volumeUuid or treeUuid")
    await _refused(e, "GetVolumeSnapshotTree", 404, "SYS.1003", "volumeUuid", volumeUuid="3" * 32)
    # deleting the root with two children leaves two roots in the tree: shown under an empty leaf
    await e.call("DeleteVolumeSnapshot", uuid=s[0]["uuid"])
    t = (await e.call("GetVolumeSnapshotTree", volumeUuid=root))["inventories"][0]
    assert _shape(t["tree"]) == (None, [("before-upgrade", []), ("s2", [])])
    # a volume without snapshots has no tree
    other = (await e.create_vm("vm2"))[1]["inventory"]
    assert (await e.call("GetVolumeSnapshotTree", volumeUuid=other["rootVolumeUuid"]))["inventories"] == []
