"""Whom the metadata server may trust (issue 18: security 9, reliability 3), real namespaces and ebtables.

* anti-spoofing off on the L3: the source address proves nothing (OSSN-0074) → user data refused;
* an L3 with the Userdata service but no Flat DHCP for the VM's NIC → refused;
* a rebuild (host reconnect) drops the user data of VMs that are no longer on the host;
* a VM with NICs on two Userdata L3s gets its metadata on both (whichever its guest asks).
"""

from __future__ import annotations

import logging

import pytest
from flatnet_env import Env, flatnet_env_fixture  # noqa: F401  (fixture)

from flatnet.model import UserdataSpec

URL = "/latest/meta-data/instance-id"


async def test_no_user_data_when_anti_spoofing_is_off(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3(anti_spoofing=False)
    a = await env.add_vm("alpha")
    await svc.apply_dhcp([l3], [env.nic(a, l3, "10.77.0.11")], rebuild=False)
    await env.set_addr(a, "10.77.0.11")
    with caplog.at_level(logging.WARNING, logger="flatnet.service"):
        await svc.apply_userdata(UserdataSpec(vm_uuid="vm-alpha", l3_uuid=l3.uuid, vm_ip="10.77.0.11",
                                              userdata="#cloud-config\n", root_password="s3cret"))
    assert (await env.http(a, f"http://10.77.0.2{URL}"))[0] == 404
    assert (await env.http(a, "http://10.77.0.2:8080/", headers=("DomU_Request: send_my_password",)))[1] \
        == "bad_request"
    assert any("NOT served" in r.getMessage() and "anti-spoofing off" in r.getMessage() for r in caplog.records)


async def test_no_user_data_without_flat_dhcp_for_the_nic(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    a = await env.add_vm("alpha")
    await svc.prepare([l3])  # the L3 has Userdata from Flat, but the VM's NIC is not served by Flat DHCP
    await env.set_addr(a, "10.77.0.11")
    with caplog.at_level(logging.WARNING, logger="flatnet.service"):
        await svc.apply_userdata(UserdataSpec(vm_uuid="vm-alpha", l3_uuid=l3.uuid, vm_ip="10.77.0.11",
                                              userdata="#cloud-config\n"))
    assert (await env.http(a, f"http://10.77.0.2{URL}"))[0] == 404
    assert any("not Flat DHCP" in r.getMessage() for r in caplog.records)


async def test_rebuild_drops_user_data_of_vms_no_longer_on_the_host(env: Env) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    a, b = await env.add_vm("alpha"), await env.add_vm("beta")
    await svc.apply_dhcp([l3], [env.nic(a, l3, "10.77.0.11"), env.nic(b, l3, "10.77.0.12")], rebuild=False)
    for vm, ip in ((a, "10.77.0.11"), (b, "10.77.0.12")):
        await svc.apply_userdata(UserdataSpec(vm_uuid=f"vm-{vm.name}", l3_uuid=l3.uuid, vm_ip=ip,
                                              root_password=f"pw-{vm.name}"))
    await svc.apply_dhcp([l3], [env.nic(b, l3, "10.77.0.12")], rebuild=True)  # alpha left the host
    assert set(svc.state.userdata) == {"vm-beta"}
    assert "pw-alpha" not in svc.store.path.read_text()
    assert svc.metadata.entry_count(l3.uuid) == 1


async def test_metadata_on_every_userdata_l3_of_a_vm(env: Env) -> None:
    from flatnet.model import L3Address  # (new in this change: lets the other tests run on the old code)

    svc = env.service()
    await svc.start()
    l3a, l3b = env.l3(), env.l3(cidr_prefix="10.78.0")
    first, second = await env.add_vm("multi0"), await env.add_vm("multi1")  # the two NICs of one VM
    nics = [env.nic(first, l3a, "10.77.0.11", vm_uuid="vm-multi", default_l3=False),
            env.nic(second, l3b, "10.78.0.11", vm_uuid="vm-multi", default_l3=True)]
    await svc.apply_dhcp([l3a, l3b], nics, rebuild=False)
    await env.set_addr(first, "10.77.0.11")
    await env.set_addr(second, "10.78.0.11")
    await svc.apply_userdata(UserdataSpec(vm_uuid="vm-multi", l3_uuid=l3b.uuid, vm_ip="10.78.0.11",
                                          userdata="#cloud-config\n",
                                          addresses=(L3Address(l3_uuid=l3a.uuid, ip="10.77.0.11"),)))
    assert await env.http(second, f"http://10.78.0.2{URL}") == (200, "vm-multi")
    assert await env.http(first, f"http://10.77.0.2{URL}") == (200, "vm-multi")
    assert await env.http(first, "http://10.77.0.2/latest/user-data") == (200, "#cloud-config\n")
