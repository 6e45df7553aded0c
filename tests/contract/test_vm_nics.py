"""AttachL3NetworkToVm / DetachL3NetworkFromVm / GetVmAttachableL3Network against real in-process agents
(libvirt test driver): IPs allocated and released, the domain definition follows, 1.0's refusals."""

from __future__ import annotations

from typing import Any

from test_controller_compute import CTX, Env, _agent


async def _domain_macs(e: Env, vm: dict[str, Any]) -> list[str]:
    guest = await _agent(e, vm["hostUuid"]).app[CTX].driver.host.lookup(vm["uuid"])
    assert guest is not None
    import xml.etree.ElementTree as ET

    dom = ET.fromstring(await guest.xml(inactive=True))
    return [m.get("address", "") for m in dom.findall("devices/interface/mac")]


async def _l3(e: Env, name: str, iface: str, cidr3: str, attach: bool = True) -> dict[str, Any]:
    l2 = await e.inv("CreateL2NoVlanNetwork", name=f"l2-{name}", zoneUuid=e.ids["zone"], physicalInterface=iface)
    if attach:
        await e.call("AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"], clusterUuid=e.ids["cluster"])
    l3 = await e.inv("CreateL3Network", name=name, l2NetworkUuid=l2["uuid"])
    await e.call("AddIpRange", l3NetworkUuid=l3["uuid"], name="r", startIp=f"{cidr3}.10", endIp=f"{cidr3}.20",
                 netmask="255.255.255.0", gateway=f"{cidr3}.1")
    return l3


async def _refused(e: Env, api_name: str, status: int, code: str, /, *needles: str, **kw: Any) -> None:
    before = await e.core.db.fetchone("SELECT (SELECT COUNT(*) FROM VmNic), (SELECT COUNT(*) FROM UsedIp)")
    got, body = await e.raw(api_name, **kw)
    assert got == status and body["error"]["code"] == code, body
    for n in needles:
        assert n in body["error"]["details"], (n, body)
    after = await e.core.db.fetchone("SELECT (SELECT COUNT(*) FROM VmNic), (SELECT COUNT(*) FROM UsedIp)")
    assert tuple(before) == tuple(after)


async def _free(e: Env, l3_uuid: str) -> int:
    return int((await e.call("GetIpAddressCapacity", l3NetworkUuids=[l3_uuid]))["availableCapacity"])


async def test_attach_detach_running_and_stopped(env: Env) -> None:
    e = env
    b = await _l3(e, "b", "eth1", "10.20.0")
    c = await _l3(e, "c", "eth2", "10.30.0", attach=False)        # its L2 is not on the VM's cluster
    d = await _l3(e, "d", "eth3", "10.40.0")
    await e.call("ChangeL3NetworkState", uuid=d["uuid"], stateEvent="disable")
    vm = (await e.create_vm("vm1"))[1]["inventory"]
    listed = [i["uuid"] for i in (await e.call("GetVmAttachableL3Network", vmInstanceUuid=vm["uuid"]))["inventories"]]
    assert listed == [b["uuid"]]
    free = await _free(e, b["uuid"])
    inv = await e.inv("AttachL3NetworkToVm", vmInstanceUuid=vm["uuid"], l3NetworkUuid=b["uuid"])
    nics = {n["l3NetworkUuid"]: n for n in inv["vmNics"]}
    new = nics[b["uuid"]]
    assert new["deviceId"] == 1 and new["ip"].startswith("10.20.0.") and new["internalName"] == \
        f"vnic{vm['internalId']}.1" and new["gateway"] == "10.20.0.1"
    assert await _free(e, b["uuid"]) == free - 1
    assert new["mac"] in await _domain_macs(e, vm)
    assert inv["defaultL3NetworkUuid"] == e.ids["l3"]
    assert (await e.call("GetVmAttachableL3Network", vmInstanceUuid=vm["uuid"]))["inventories"] == []
    await _refused(e, "AttachL3NetworkToVm", 400, "SYS.1007", "already attached", vmInstanceUuid=vm["uuid"],
                   l3NetworkUuid=b["uuid"])
    await _refused(e, "AttachL3NetworkToVm", 400, "SYS.1007", "is disabled", vmInstanceUuid=vm["uuid"],
                   l3NetworkUuid=d["uuid"])
    await _refused(e, "AttachL3NetworkToVm", 400, "SYS.1007", "not attached to the cluster",
                   vmInstanceUuid=vm["uuid"], l3NetworkUuid=c["uuid"])
    await _refused(e, "AttachL3NetworkToVm", 404, "SYS.1003", "l3NetworkUuid", vmInstanceUuid=vm["uuid"],
                   l3NetworkUuid="b" * 32)
    # detach the new NIC: unplugged, IP back
    inv = await e.inv("DetachL3NetworkFromVm", vmNicUuid=new["uuid"])
    assert [n["l3NetworkUuid"] for n in inv["vmNics"]] == [e.ids["l3"]]
    assert new["mac"] not in await _domain_macs(e, vm)
    assert await _free(e, b["uuid"]) == free
    await _refused(e, "DetachL3NetworkFromVm", 404, "SYS.1003", "vmNicUuid", vmNicUuid=new["uuid"])
    # Stopped: attach is a record; the next start plugs it; detaching the default NIC moves the default
    await e.call("StopVmInstance", uuid=vm["uuid"])
    inv = await e.inv("AttachL3NetworkToVm", vmInstanceUuid=vm["uuid"], l3NetworkUuid=b["uuid"])
    second = next(n for n in inv["vmNics"] if n["l3NetworkUuid"] == b["uuid"])
    started = await e.inv("StartVmInstance", uuid=vm["uuid"])
    macs = await _domain_macs(e, started)
    assert second["mac"] in macs and len(macs) == 2
    first = next(n for n in inv["vmNics"] if n["l3NetworkUuid"] == e.ids["l3"])
    inv = await e.inv("DetachL3NetworkFromVm", vmNicUuid=first["uuid"])
    assert inv["defaultL3NetworkUuid"] == b["uuid"] and [n["uuid"] for n in inv["vmNics"]] == [second["uuid"]]
    assert first["mac"] not in await _domain_macs(e, started)
    # a Destroyed VM: VM.1010, and nothing is listed for it
    await e.call("DestroyVmInstance", uuid=vm["uuid"])
    await _refused(e, "AttachL3NetworkToVm", 409, "VM.1010", vmInstanceUuid=vm["uuid"], l3NetworkUuid=e.ids["l3"])
    assert (await e.call("GetVmAttachableL3Network", vmInstanceUuid=vm["uuid"]))["inventories"] == []
