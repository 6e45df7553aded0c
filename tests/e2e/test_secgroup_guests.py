"""Issue 14 end to end: security groups enforced on the testbed hosts for two real tiny guests.

VM A on host 1 and VM B on host 2 (one flat L3 with DHCP, Userdata and SecurityGroup). Each guest runs
dropbear on 22 and a busybox httpd on 8080. Probes run inside the guests (``nc`` from one guest to the other,
``ping``), so the traffic crosses both hosts' bridges and the shared L2 exactly as guest traffic does.

* In no group both ports and ping are open (1.0: a NIC in no group is open): the listeners work.
* Group ``sg-a`` (A) admits TCP 22 from B's CIDR; group ``sg-b`` (B) admits TCP 22 from the members of
  ``sg-a`` (remote group). Both admit TCP 22 from the L3's flat DHCP address, the test's own SSH path into the
  guests. Then A and B reach each other on 22, never on 8080, and ping is dropped (no ICMP rule).
* An ICMP rule on ``sg-b`` from A's address: A pings B, B still cannot ping A.
* Deleting ``sg-b``'s remote-group rule blocks A's SSH connection to B (ping still goes through); adding it
  back allows it again.
* NICs in a group still get DHCP leases (renewal) and the metadata service.
* Removing B's NIC from its group brings back 1.0's default for B: open (8080 reachable again).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from lab import Testbed, TinyImage
from test_flatnet import Flat, _renew, flat_lab

from controller.flatnet_provider.dhcpserver import current_dhcp_ip

UD_URL = "http://169.254.169.254/latest/user-data"
CONNECT = 8  # seconds nc waits for a TCP connection (a dropped SYN) before it gives up
SETTLE = 90.0  # generous bound for something that must become true (busy cores, TCG guests)


@pytest.fixture
async def flat(testbed: Testbed, tiny: TinyImage, tmp_path: Path) -> AsyncIterator[Flat]:
    async with flat_lab("secgroup-guests", testbed, tiny, tmp_path, services=True, log_tail=25,
                        agent_out_tail=30) as lab:
        yield lab


async def _until(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(2)


class Guests:
    def __init__(self, lab: Flat) -> None:
        self.lab = lab

    async def sh(self, vm: dict[str, Any], command: str) -> str:
        """``command`` in ``vm`` over SSH from its host's flat namespace (retried until sshd answers); stdout."""
        (st,) = await self.lab.status(vm["hostUuid"])
        h = self.lab.hosts[vm["hostUuid"]]
        argv = ["ip", "netns", "exec", st.namespace, "ssh", "-i", str(self.lab.key), "-o", "BatchMode=yes", "-o",
                "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
                "ConnectTimeout=10", "-o", "ServerAliveInterval=10", f"root@{vm['vmNics'][0]['ip']}", command]
        deadline = time.monotonic() + SETTLE
        while True:
            t0 = time.monotonic()
            try:
                cp = await asyncio.to_thread(h.run, *argv, check=False, timeout=120)
                rc, err = cp.returncode, cp.stderr
            except subprocess.TimeoutExpired:
                rc, err = None, "no answer in 120 s"
            print(f"  [{vm['name']}] {command[:70]!r}: rc={rc} in {time.monotonic() - t0:.1f} s")
            if rc == 0:
                return str(cp.stdout)
            if time.monotonic() > deadline:
                raise AssertionError(f"ssh {command!r} to {vm['name']}: rc={rc} {err}\n"
                                     f"console:\n{self.lab.console(vm)[-1500:]}")
            await asyncio.sleep(2)

    async def tcp(self, src: dict[str, Any], dst: dict[str, Any] | str, port: int) -> str:
        """What ``src`` reads from ``dst``:``port`` (a VM or an IP; an HTTP request is sent, dropbear answers
        with its banner whatever it is sent), as printable text; empty when no connection is made within
        CONNECT seconds."""
        ip = dst if isinstance(dst, str) else dst["vmNics"][0]["ip"]
        return await self.sh(src, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout {CONNECT + 12} "
                                  f"nc -w {CONNECT} {ip} {port} 2>/dev/null | tr -cd 'A-Za-z0-9_.\\n-'; true")

    async def ping(self, src: dict[str, Any], dst: dict[str, Any]) -> bool:
        out = await self.sh(src, f"ping -c 2 -W 3 {dst['vmNics'][0]['ip']} >/dev/null 2>&1; echo rc=$?")
        return out.strip() == "rc=0"

    async def reaches(self, src: dict[str, Any], dst: dict[str, Any], port: int, what: str) -> None:
        async def ok() -> bool:
            return what in await self.tcp(src, dst, port)
        await _until(ok, f"{src['name']} -> {dst['name']}:{port} to answer {what!r}")

    async def blocked(self, src: dict[str, Any], dst: dict[str, Any], port: int) -> None:
        got = await self.tcp(src, dst, port)
        assert got == "", f"{src['name']} -> {dst['name']}:{port} must be dropped, got {got[:200]!r}"

    async def pings(self, src: dict[str, Any], dst: dict[str, Any]) -> None:
        async def ok() -> bool:
            return await self.ping(src, dst)
        await _until(ok, f"{src['name']} to ping {dst['name']}")


async def _synced(lab: Flat) -> None:
    """Every host has confirmed the generation the controller wants it to enforce."""
    async def ok() -> bool:
        rows = await lab.core.db.fetchall("SELECT appliedGeneration, wantedGeneration, lastError FROM "
                                          "SecurityGroupHostState")
        return bool(rows) and all(r[0] >= r[1] and r[2] is None for r in rows)
    await _until(ok, "security-group pushes confirmed by the hosts")


async def test_security_groups_between_two_guests_on_two_hosts(flat: Flat) -> None:
    ctl, g = flat.ctl, Guests(flat)
    l3 = ctl.ids["l3"]
    [provider] = (await ctl.raw("QueryNetworkServiceProvider", conditions=[
        {"name": "type", "op": "=", "value": "SecurityGroup"}]))[1]["inventories"]
    await ctl.inv("AttachNetworkServiceToL3Network", l3NetworkUuid=l3, networkServices={provider["uuid"]:
                                                                                          ["SecurityGroup"]})
    ha, hb = list(flat.hosts)
    a, b = [await ctl.inv("CreateVmInstance", name=name, instanceOfferingUuid=ctl.ids["offering"],
                          imageUuid=ctl.ids["image"], l3NetworkUuids=[l3], hostUuid=host,
                          systemTags=[f"sshkey::{flat.pub}"]) for name, host in (("sg-vm-a", ha), ("sg-vm-b", hb))]
    for vm in (a, b):
        m = await flat.wait_console(vm, r"tiny: LEASE eth0 (\S+)/", timeout=240)
        assert m.group(1) == vm["vmNics"][0]["ip"], (vm["name"], m.group(0))
        await g.sh(vm, f"mkdir -p /tmp/www && echo web-of-{vm['name']} > /tmp/www/index.html && "
                       "httpd -p 8080 -h /tmp/www")
    a_ip, b_ip = a["vmNics"][0]["ip"], b["vmNics"][0]["ip"]
    dhcp = await current_dhcp_ip(flat.core, l3)
    assert dhcp is not None
    # no group: open; this also shows that the listeners and the probes work
    await g.reaches(a, b, 8080, "web-of-sg-vm-b")
    await g.reaches(b, a, 8080, "web-of-sg-vm-a")
    await g.reaches(a, b, 22, "SSH-2.0-dropbear")
    await g.pings(a, b)

    sga = await ctl.inv("CreateSecurityGroup", name="sg-a")
    sgb = await ctl.inv("CreateSecurityGroup", name="sg-b")
    control = {"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22,
               "allowedCidr": f"{dhcp['ip']}/32"}  # the test's SSH into the guests comes from there
    for sg in (sga, sgb):
        await ctl.inv("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=l3)
    await ctl.inv("AddSecurityGroupRule", securityGroupUuid=sga["uuid"], rules=[
        control, {"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22, "allowedCidr": f"{b_ip}/32"}])
    inv = await ctl.inv("AddSecurityGroupRule", securityGroupUuid=sgb["uuid"], rules=[
        control, {"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22,
                  "remoteSecurityGroupUuid": sga["uuid"]}])
    ssh_rule = next(r for r in inv["rules"] if r.get("remoteSecurityGroupUuid") == sga["uuid"])
    await ctl.inv("AddVmNicToSecurityGroup", securityGroupUuid=sga["uuid"], vmNicUuids=[a["vmNics"][0]["uuid"]])
    await ctl.inv("AddVmNicToSecurityGroup", securityGroupUuid=sgb["uuid"], vmNicUuids=[b["vmNics"][0]["uuid"]])
    await _synced(flat)
    await g.reaches(a, b, 22, "SSH-2.0-dropbear")
    await g.reaches(b, a, 22, "SSH-2.0-dropbear")
    assert "web-of-sg-vm-b" in await g.tcp(b, "127.0.0.1", 8080)  # B's listener is up
    await g.blocked(a, b, 8080)
    await g.blocked(b, a, 8080)
    assert not await g.ping(a, b), "no ICMP rule: A's ping to B must be dropped"

    # ICMP per rule: B admits any ICMP from A's address; A admits none
    await ctl.inv("AddSecurityGroupRule", securityGroupUuid=sgb["uuid"], rules=[
        {"type": "Ingress", "protocol": "ICMP", "startPort": -1, "endPort": -1, "allowedCidr": f"{a_ip}/32"}])
    await _synced(flat)
    await g.pings(a, b)
    assert not await g.ping(b, a), "sg-a has no ICMP rule: B's ping to A must be dropped"

    # removing the rule that admits A's group blocks SSH from A; adding it back allows it again
    await ctl.inv("DeleteSecurityGroupRule", ruleUuids=[ssh_rule["uuid"]])
    await _synced(flat)
    await g.blocked(a, b, 22)
    await g.pings(a, b)  # A still reaches B: only the SSH rule went
    await ctl.inv("AddSecurityGroupRule", securityGroupUuid=sgb["uuid"], rules=[
        {"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22, "remoteSecurityGroupUuid": sga["uuid"]}])
    await _synced(flat)
    await g.reaches(a, b, 22, "SSH-2.0-dropbear")
    await g.blocked(a, b, 8080)

    # DHCP and metadata keep working for NICs in a group
    for vm in (a, b):
        assert await _renew(flat, vm), f"{vm['name']} in a group must still renew its lease"
        assert (await g.sh(vm, f"timeout 30 wget -q -O - {UD_URL}")).startswith("#cloud-config\nssh_authorized_keys:")

    # B out of its group: open again (1.0's default for a NIC in no group)
    await ctl.inv("DeleteVmNicFromSecurityGroup", securityGroupUuid=sgb["uuid"], vmNicUuids=[b["vmNics"][0]["uuid"]])
    await _synced(flat)
    await g.reaches(a, b, 8080, "web-of-sg-vm-b")
    await g.blocked(b, a, 8080)  # A is still in sg-a
