"""CreateVirtualRouterOffering / UpdateVirtualRouterOffering / QueryVirtualRouterOffering: 1.0's fields and
rules (reference virtual-router.md §1.1), and the router inventories' extra fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apiclient import Api

MiB = 1 << 20


async def _env(api: Api, tmp_path: Path) -> dict[str, Any]:
    zone = await api.inv("CreateZone", name="z")
    other = await api.inv("CreateZone", name="z2")
    l2 = await api.inv("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
    l2b = await api.inv("CreateL2NoVlanNetwork", name="l2b", zoneUuid=other["uuid"], physicalInterface="eth0")
    mgmt = await api.inv("CreateL3Network", name="mgmt", l2NetworkUuid=l2["uuid"])
    pub = await api.inv("CreateL3Network", name="pub", l2NetworkUuid=l2["uuid"])
    guest = await api.inv("CreateL3Network", name="guest", l2NetworkUuid=l2["uuid"])
    far = await api.inv("CreateL3Network", name="far", l2NetworkUuid=l2b["uuid"])
    (tmp_path / "vr.qcow2").write_bytes(b"QFI\xfb")
    (tmp_path / "x.iso").write_bytes(b"CD001")
    image = await api.inv("AddImage", name="vr", url=f"file://{tmp_path}/vr.qcow2", format="qcow2", system=True)
    iso = await api.inv("AddImage", name="iso", url=f"file://{tmp_path}/x.iso", format="iso", mediaType="ISO")
    return {"zone": zone["uuid"], "other": other["uuid"], "mgmt": mgmt["uuid"], "pub": pub["uuid"],
            "guest": guest["uuid"], "far": far["uuid"], "image": image["uuid"], "iso": iso["uuid"]}


def _params(env: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {"name": "vr", "cpuNum": 1, "cpuSpeed": 1000, "memorySize": 256 * MiB, "zoneUuid": env["zone"],
            "managementNetworkUuid": env["mgmt"], "imageUuid": env["image"], **over}


async def test_create_query_update_and_default_rules(api: Api, tmp_path: Path) -> None:
    env = await _env(api, tmp_path)
    first = await api.inv("CreateVirtualRouterOffering", **_params(env))
    assert {k: first[k] for k in ("type", "zoneUuid", "managementNetworkUuid", "publicNetworkUuid", "imageUuid",
                                  "isDefault", "cpuNum", "memorySize", "state")} == {
        "type": "VirtualRouter", "zoneUuid": env["zone"], "managementNetworkUuid": env["mgmt"],
        "publicNetworkUuid": env["mgmt"], "imageUuid": env["image"], "isDefault": True, "cpuNum": 1,
        "memorySize": 256 * MiB, "state": "Enabled"}   # first of the zone: default; public := management
    second = await api.inv("CreateVirtualRouterOffering", **_params(env, name="vr2", publicNetworkUuid=env["pub"],
                                                                     systemTags=[f"guestL3Network::{env['guest']}"]))
    assert second["isDefault"] is False and second["publicNetworkUuid"] == env["pub"]
    third = await api.inv("CreateVirtualRouterOffering", **_params(env, name="vr3", isDefault=True))
    got = {o["uuid"]: o["isDefault"] for o in await api.query("QueryVirtualRouterOffering")}
    assert got == {first["uuid"]: False, second["uuid"]: False, third["uuid"]: True}
    # a VirtualRouter offering is also an instance offering
    assert {o["uuid"] for o in await api.query("QueryInstanceOffering", ("type", "=", "VirtualRouter"))} == set(got)
    upd = await api.inv("UpdateVirtualRouterOffering", uuid=first["uuid"], name="renamed", isDefault=True)
    assert upd["name"] == "renamed" and upd["isDefault"] is True
    assert [o["uuid"] for o in await api.query("QueryVirtualRouterOffering", ("isDefault", "=", "true"))] == \
        [first["uuid"]]
    await api.call("DeleteInstanceOffering", uuid=second["uuid"])
    assert len(await api.query("QueryVirtualRouterOffering")) == 2
    assert await api.query("QueryVirtualRouterVm") == [] and await api.query("QueryApplianceVm") == []


async def test_bad_input_names_the_field_and_changes_nothing(api: Api, tmp_path: Path) -> None:
    env = await _env(api, tmp_path)
    cases = [
        (_params(env, zoneUuid="0" * 32), 404, "zoneUuid"),
        (_params(env, managementNetworkUuid=env["far"]), 400, "managementNetworkUuid"),
        (_params(env, publicNetworkUuid=env["far"]), 400, "publicNetworkUuid"),
        (_params(env, imageUuid=env["iso"]), 400, "is not a RootVolumeTemplate, it's ISO"),
        (_params(env, cpuNum=0), 400, "cpuNum"),
        (_params(env, imageUuid="1" * 32), 404, "imageUuid"),
    ]
    for params, status, text in cases:
        s, body = await api.raw("CreateVirtualRouterOffering", **params)
        assert s == status and text in body["error"]["details"], (params, s, body)
    assert await api.query("QueryVirtualRouterOffering") == []
    assert await api.query("QueryInstanceOffering") == []
    s, body = await api.raw("UpdateVirtualRouterOffering", uuid="2" * 32, name="x")
    assert s == 404 and "VirtualRouterOfferingVO" in body["error"]["details"]
    s, body = await api.raw("ReconnectVirtualRouter", vmInstanceUuid="4" * 32)
    assert s == 404 and "vmInstanceUuid" in body["error"]["details"]


async def test_snat_l3_cannot_be_management_or_public(api: Api, tmp_path: Path) -> None:
    env = await _env(api, tmp_path)
    [vr] = await api.query("QueryNetworkServiceProvider", ("type", "=", "VirtualRouter"))
    await api.call("AttachNetworkServiceToL3Network", l3NetworkUuid=env["pub"],
                   networkServices={vr["uuid"]: ["SNAT"]})
    s, body = await api.raw("CreateVirtualRouterOffering", **_params(env, managementNetworkUuid=env["pub"]))
    assert s == 400 and "has the SNAT service enabled, it cannot be used as a management network" in \
        body["error"]["details"]
    s, body = await api.raw("CreateVirtualRouterOffering", **_params(env, publicNetworkUuid=env["pub"]))
    assert s == 400 and "as a public network" in body["error"]["details"]
