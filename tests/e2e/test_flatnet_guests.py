"""Issue 7 proofs from inside real tiny-image guests on the 2-host testbed.

* Spoofing: on one host and one flat L3, VM B takes VM A's IP (then also A's MAC): the metadata service never
  hands B A's user data, and B's DHCP discover with A's MAC gets no lease; a rogue ``udhcpd`` in B reaches
  nobody: A's renewal comes from the host's dnsmasq. A still works once B is gone.
* The seed's section 13 on a running network: an L3 whose DHCP/DNS come from a running router VM (each
  guest's lease has the router's IP as DHCP server id), steps 1-8 verbatim through zstack-cli with real uuids
  (the router is listed, destroyed, the hosts reconnected): the running guests keep their addresses and renew
  from their host's flat DHCP.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lab import PS_URL, Testbed, TinyImage
from test_flatnet import Flat, _cli, flat_lab
from test_vrouter import vr_image

SEED = Path("/work/shared/seed/zstack-1.0-release-notes.txt")
UD_URL = "http://169.254.169.254/latest/user-data"

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(testbed: Testbed, tiny: TinyImage, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Flat]:
    """One in-process controller with both testbed hosts for the module; the default L3 has NO service yet."""
    tmp_path = tmp_path_factory.mktemp("flatguests")
    mp = pytest.MonkeyPatch()
    async with flat_lab("flatnet-guests", testbed, tiny, tmp_path, paths=(PS_URL, "/var/lib/zstack-py/console"),
                        log_tail=25) as lab:
        mp.setenv("ZSTACK_URL", lab.ctl.url)
        mp.setenv("ZSTACK_CLI_HOME", str(tmp_path / "cli"))
        try:
            yield lab
        finally:
            mp.undo()


async def _namespace(lab: Flat, vm: dict[str, Any]) -> str:
    l3 = vm["vmNics"][0]["l3NetworkUuid"]
    return next(st.namespace for st in await lab.status(vm["hostUuid"]) if st.l3NetworkUuid == l3)


async def _ssh(lab: Flat, vm: dict[str, Any], command: str, timeout: float = 30) -> Any:
    """``command`` over SSH from the host's flat namespace of the VM's L3, retried while sshd does not answer
    (not up yet, or the guest is busy being someone else); the last attempt's result."""
    ns = await _namespace(lab, vm)
    h = lab.hosts[vm["hostUuid"]]
    argv = ["ip", "netns", "exec", ns, "ssh", "-i", str(lab.key), "-o", "BatchMode=yes", "-o",
            "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
            "ConnectTimeout=4", f"root@{vm['vmNics'][0]['ip']}", command]
    deadline = time.monotonic() + timeout
    while True:
        cp = await asyncio.to_thread(h.run, *argv, check=False, timeout=60)
        if cp.returncode != 255 or time.monotonic() > deadline:
            return cp
        await asyncio.sleep(1)


async def _ssh_ok(lab: Flat, vm: dict[str, Any], command: str, timeout: float = 30) -> str:
    cp = await _ssh(lab, vm, command, timeout)
    assert cp.returncode == 0, (f"ssh {command[:60]!r} to {vm['name']}: rc={cp.returncode} {cp.stdout} "
                                f"{cp.stderr}\nconsole:\n{lab.console(vm)[-1500:]}")
    return str(cp.stdout)


async def _create(lab: Flat, name: str, l3: str, host: str, *tags: str) -> dict[str, Any]:
    c = lab.ctl
    return await c.inv("CreateVmInstance", name=name, instanceOfferingUuid=c.ids["offering"],
                       imageUuid=c.ids["image"], l3NetworkUuids=[l3], hostUuid=host,
                       systemTags=[f"sshkey::{lab.pub}", *tags])


def _spoof_script(a: dict[str, Any], b: dict[str, Any]) -> str:
    """B becomes A (IP, then IP + MAC), tries A's user data and A's lease, then becomes B again. One shell
    script run detached inside B: B is unreachable over SSH while it wears A's address."""
    an, bn = a["vmNics"][0], b["vmNics"][0]
    return f"""
exec > /tmp/spoof.log 2>&1
fetch() {{ timeout 6 wget -q -O - {UD_URL}; echo "; wget rc=$?"; }}
routes() {{ while read -r r; do ip route replace $r 2>/dev/null; done < /tmp/routes; }}
wear() {{  # $1 MAC, $2 IP: the only address on eth0
    ip link set eth0 down; ip link set eth0 address $1; ip link set eth0 up
    ip addr flush dev eth0; ip addr add $2/24 dev eth0; routes
    arp -i eth0 -s $gw $gwmac  # past ARP: the IPv4 packets themselves must be dropped
}}
kill $(cat /run/udhcpc.eth0.pid)  # B's own DHCP client must not put B's address back mid-experiment
sleep 0.5
ip route show | grep -v 'proto kernel' > /tmp/routes
echo "== own"; fetch
gw=$(ip route | awk '$1 == "169.254.169.254" && $2 == "via" {{print $3}}')
gwmac=$(arp -n -a | awk -v g="($gw)" '$2 == g {{print $4}}')
echo "metadata via $gw at $gwmac"
wear {bn['mac']} {an['ip']}
echo "== ip"; ip -4 -o addr show dev eth0; ip route get 169.254.169.254; fetch
wear {an['mac']} {an['ip']}
echo "== ipmac"; ip -o link show eth0; ip -4 -o addr show dev eth0; fetch
echo "== dhcp"; timeout 20 udhcpc -i eth0 -n -q -t 4 -T 1 -s /bin/true; echo "udhcpc rc=$?"
wear {bn['mac']} {bn['ip']}
echo "== restored"; ip -o link show eth0; fetch
echo "== done"
"""


def _sections(log: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^== (\w+)\n(.*?)(?=^== |\Z)", log, re.M | re.S)}


async def test_seed_section_13_on_a_running_network(lab: Flat, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """First in the module: as at the seed's starting point, no L3 of this L2 uses the flat provider yet."""
    c = lab.ctl
    l2 = (await c.raw("QueryL3Network", conditions=[{"name": "uuid", "op": "=", "value": c.ids["l3"]}]))[1][
        "inventories"][0]["l2NetworkUuid"]
    assert await lab.core.db.fetchone(
        "SELECT 1 FROM NetworkServiceL3NetworkRef r JOIN NetworkServiceProvider p ON p.uuid = "
        "r.networkServiceProviderUuid JOIN L3Network l3 ON l3.uuid = r.l3NetworkUuid WHERE p.type='Flat' AND "
        "l3.l2NetworkUuid=?", (l2,)) is None
    l3 = (await c.inv("CreateL3Network", name="l3-vr", l2NetworkUuid=l2))["uuid"]
    await c.inv("AddIpRange", l3NetworkUuid=l3, name="r2", startIp="10.101.0.10", endIp="10.101.0.200",
                netmask="255.255.255.0", gateway="10.101.0.1")
    await c.inv("AddDnsToL3Network", l3NetworkUuid=l3, dns="10.101.0.53")
    vr = (await c.raw("QueryNetworkServiceProvider", conditions=[
        {"name": "type", "op": "=", "value": "VirtualRouter"}]))[1]["inventories"][0]["uuid"]
    await c.inv("AttachNetworkServiceToL3Network", l3NetworkUuid=l3, networkServices={vr: ["DHCP", "DNS"]})
    # the seed's starting point: the L3's DHCP and DNS served by a router VM (management = public = guest L3)
    image_file = tmp_path / "vrouter.qcow2"
    shutil.copyfile(await asyncio.to_thread(vr_image), image_file)
    image = await c.inv("AddImage", name="vrouter", url=f"file://{image_file}", format="qcow2", system=True)
    zone = (await c.raw("QueryL3Network", conditions=[{"name": "uuid", "op": "=", "value": l3}]))[1][
        "inventories"][0]["zoneUuid"]
    await c.inv("CreateVirtualRouterOffering", name="vr", cpuNum=1, cpuSpeed=1000, memorySize=256 << 20,
                zoneUuid=zone, managementNetworkUuid=l3, imageUuid=image["uuid"])
    vms = [await _create(lab, f"upg-{i}", l3, h) for i, h in enumerate(lab.hosts)]
    (router,) = (await c.raw("QueryVirtualRouterVm", conditions=[]))[1]["inventories"]
    (rnic,) = router["vmNics"]
    for vm in vms:  # each guest's lease comes from the router's dnsmasq (DHCP server id = the router's IP)
        m = await lab.wait_console(vm, r"tiny: LEASE eth0 (\S+)/\S+ router=(\S+) server=(\S+)", timeout=240)
        assert m.groups() == (vm["vmNics"][0]["ip"], "10.101.0.1", rnic["ip"]), m.group(0)
    await _cli("LogInByAccount accountName=admin password=password", capsys)
    steps = _seed13()
    seed_l3, seed_vr, seed_l2, seed_flat, seed_router = (
        "1a82c2691978476fa6cefa36bb9d4bfd", "5d21ea0f39c04d6fb68cfaf5a37db4ad", "9ec8cad681d1424fa7eda2447edae142",
        "17864f985e584a9ba4cd81de215212ce", "c5a966cb87d644649952daf683f89e26")
    refs = (await _cli(steps[0].replace(seed_l3, l3), capsys))["inventories"]  # 1
    assert {(r["networkServiceProviderUuid"], r["networkServiceType"]) for r in refs} == {(vr, "DHCP"), (vr, "DNS")}
    detached = (await _cli(steps[1].replace(seed_l3, l3).replace(seed_vr, vr), capsys))["inventory"]  # 2
    assert detached["networkServices"] == [], detached
    (flat,) = (await _cli(steps[2], capsys))["inventories"]  # 3
    assert flat["type"] == "Flat" and l2 in flat["attachedL2NetworkUuids"], flat
    assert (await _cli(steps[3].replace(seed_l3, l3), capsys))["inventories"] == [{"l2NetworkUuid": l2}]  # 4
    await _cli(steps[4].replace(seed_l2, l2).replace(seed_flat, flat["uuid"]), capsys)  # 5
    attached = (await _cli(steps[5].replace(seed_l3, l3).replace(seed_flat, flat["uuid"]), capsys))["inventory"]
    assert {(s["networkServiceProviderUuid"], s["networkServiceType"]) for s in attached["networkServices"]} == {
        (flat["uuid"], "DHCP"), (flat["uuid"], "Userdata")}, attached  # 6
    assert steps[6] == "QueryVirtualRouterVm"  # 7: the router is listed (as in the seed), then destroyed
    (listed,) = (await _cli(steps[6], capsys))["inventories"]
    assert {k: listed[k] for k in ("uuid", "name", "type", "applianceVmType", "state", "status",
                                   "managementNetworkUuid", "publicNetworkUuid", "defaultRouteL3NetworkUuid")} == {
        "uuid": router["uuid"], "name": f"virtualRouter.l3.{l3}", "type": "ApplianceVm",
        "applianceVmType": "VirtualRouter", "state": "Running", "status": "Connected", "managementNetworkUuid": l3,
        "publicNetworkUuid": l3, "defaultRouteL3NetworkUuid": l3}, listed
    (nic,) = listed["vmNics"]
    assert (nic["metaData"], nic["deviceId"], nic["gateway"], nic["ip"]) == ("7", 0, "10.101.0.1", rnic["ip"]), nic
    assert listed["allVolumes"][0]["name"] == f"ROOT-for-virtualRouter.l3.{l3}", listed
    assert steps[7].startswith("DestroyVmInstance uuid=")
    assert (await _cli(steps[7].replace(seed_router, router["uuid"]), capsys))["success"] is True
    assert (await _cli(steps[6], capsys))["inventories"] == []
    assert await lab.core.db.fetchone("SELECT 1 FROM UsedIp WHERE ip=? AND l3NetworkUuid=?", (rnic["ip"], l3)) is None
    assert steps[8] == "QueryHost"  # 8
    assert {h["uuid"] for h in (await _cli(steps[8], capsys))["inventories"]} == set(lab.hosts)
    for line, host in zip(steps[9:], lab.hosts, strict=True):  # the seed's two ReconnectHost lines
        await _cli(line.replace(line.split("=", 1)[1], host), capsys)
    for vm in vms:  # the running guests kept their addresses
        sts = [s for s in await lab.status(vm["hostUuid"]) if s.l3NetworkUuid == l3]
        ping = lab.hosts[vm["hostUuid"]].run("ip", "netns", "exec", sts[0].namespace, "busybox", "ping", "-c", "1",
                                             "-W", "3", vm["vmNics"][0]["ip"], check=False)
        assert ping.returncode == 0, ping
    await asyncio.gather(*(_renew_after_reboot(lab, vm) for vm in vms))
    for vm in vms:
        await c.inv("DestroyVmInstance", uuid=vm["uuid"])


async def _renew_after_reboot(lab: Flat, vm: dict[str, Any]) -> None:
    """The guest's ``sshkey::`` key could not be installed at its first boot (no metadata service then), and
    the leases are infinite (no renewal of its own): a reboot fetches the key (its lease now comes from its
    host's flat DHCP), then udhcpc renews from that server."""
    before = len(lab.console(vm))
    sts = [s for s in await lab.status(vm["hostUuid"]) if s.l3NetworkUuid == vm["vmNics"][0]["l3NetworkUuid"]]
    await lab.ctl.inv("RebootVmInstance", uuid=vm["uuid"])
    m = await lab.wait_console(vm, r"tiny: LEASE eth0 (\S+)/\S+ router=\S+ server=(\S+)", after=before, timeout=150)
    assert m.groups() == (vm["vmNics"][0]["ip"], sts[0].dhcpServerIp), m.group(0)
    await lab.wait_console(vm, r"tiny: sshd up", after=before, timeout=150)
    out = await _ssh_ok(lab, vm, "udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true 2>&1", timeout=90)
    assert f"lease of {vm['vmNics'][0]['ip']} obtained from {sts[0].dhcpServerIp}" in out, out


async def test_spoofing_from_inside_a_guest(lab: Flat) -> None:
    c = lab.ctl
    await c.attach_flat()
    host = next(iter(lab.hosts))
    a = await _create(lab, "spoof-a", c.ids["l3"], host, "userdata::secret-of-A-5f1e")
    b = await _create(lab, "spoof-b", c.ids["l3"], host, "userdata::plain-of-B-93c2")
    for vm in (a, b):
        m = await lab.wait_console(vm, r"tiny: LEASE eth0 (\S+)/")
        assert m.group(1) == vm["vmNics"][0]["ip"], (vm["name"], m.group(0))
    assert (await _ssh_ok(lab, a, f"wget -q -O - {UD_URL}")) == "secret-of-A-5f1e"
    log = await _impersonate(lab, a, b)
    s = _sections(log)
    assert set(s) >= {"own", "ip", "ipmac", "dhcp", "restored"}, log
    assert s["own"].startswith("plain-of-B-93c2; wget rc=0"), log  # the method works: B reads its own data
    assert re.search(r"metadata via \S+ at ([0-9a-f]{2}:){5}[0-9a-f]{2}\n", s["own"]), log
    assert "No route to host" not in s["ip"] + s["ipmac"], log  # a static ARP entry: the IP rule is what stops B
    assert f"inet {a['vmNics'][0]['ip']}/24" in s["ip"] and "secret-of-A" not in s["ip"], log
    assert re.search(r"; wget rc=[1-9]", s["ip"]), log
    assert a["vmNics"][0]["mac"] in s["ipmac"].lower() and "secret-of-A" not in s["ipmac"], log
    assert re.search(r"; wget rc=[1-9]", s["ipmac"]), log
    assert "lease of" not in s["dhcp"] and "udhcpc rc=1" in s["dhcp"], log
    assert s["restored"].rstrip().endswith("plain-of-B-93c2; wget rc=0"), log
    print(f"\nB impersonating A:\n{log}")
    await _rogue_dhcp(lab, a, b)
    await c.inv("DestroyVmInstance", uuid=b["uuid"])
    assert (await _ssh_ok(lab, a, f"wget -q -O - {UD_URL}")) == "secret-of-A-5f1e"
    assert "lease of" in await _ssh_ok(lab, a, "udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true 2>&1")
    await c.inv("DestroyVmInstance", uuid=a["uuid"])


async def _impersonate(lab: Flat, a: dict[str, Any], b: dict[str, Any]) -> str:
    """Run :func:`_spoof_script` detached in B; its log, read over SSH once B is B again."""
    blob = base64.b64encode(_spoof_script(a, b).encode()).decode()
    await _ssh_ok(lab, b, f"echo {blob} | base64 -d > /tmp/spoof.sh && "
                          "(setsid sh /tmp/spoof.sh </dev/null >/dev/null 2>&1 &)")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cp = await _ssh(lab, b, "cat /tmp/spoof.log", timeout=0)
        if cp.returncode == 0 and "== done" in cp.stdout:
            return str(cp.stdout)
        await asyncio.sleep(2)
    raise AssertionError(f"the experiment in {b['name']} did not finish; its console:\n{lab.console(b)[-2000:]}")


async def _rogue_dhcp(lab: Flat, a: dict[str, Any], b: dict[str, Any]) -> None:
    """busybox udhcpd in B offers from its own range; A's fresh DISCOVER is answered by the host only."""
    conf = ("start 10.100.0.240\\nend 10.100.0.250\\ninterface eth0\\nlease_file /tmp/udhcpd.leases\\n"
            "option subnet 255.255.255.0\\noption router 10.100.0.66\\n")
    await _ssh_ok(lab, b, f"busybox --list | grep -qx udhcpd && printf '{conf}' > /tmp/udhcpd.conf && "
                          "touch /tmp/udhcpd.leases && (setsid udhcpd -f -a 100 /tmp/udhcpd.conf "
                          "</dev/null >/tmp/udhcpd.out 2>&1 &) && sleep 1 && pidof udhcpd")
    (st,) = [s for s in await lab.status(a["hostUuid"]) if s.l3NetworkUuid == a["vmNics"][0]["l3NetworkUuid"]]
    got = []
    drops = await _rogue_drops(lab, b)
    for _ in range(3):
        got.append(await _ssh_ok(lab, a, "udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true 2>&1"))
    # udhcpd records each OFFER in its lease table; SIGUSR1 writes the table, dumpleases prints it
    await asyncio.sleep(4)  # udhcpd ARP-probes the address it is about to offer
    rogue = await _ssh_ok(lab, b, "kill -USR1 $(pidof udhcpd); sleep 1; dumpleases -f /tmp/udhcpd.leases; "
                                  "cat /tmp/udhcpd.out; kill $(pidof udhcpd)")
    dropped = await _rogue_drops(lab, b) - drops
    print(f"\nrogue udhcpd in B:\n{rogue}\nA's renewals:\n{''.join(got)}")
    for out in got:
        assert f"lease of {a['vmNics'][0]['ip']} obtained from {st.dhcpServerIp}" in out, out
    assert re.search(rf"(?i){a['vmNics'][0]['mac']}\s+10\.100\.0\.2[45]\d", rogue), \
        f"the rogue server never offered A an address (so this proves nothing): {rogue}"
    assert dropped >= rogue.count("sending OFFER") >= 1, (dropped, rogue)  # the bridge dropped every offer


async def _rogue_drops(lab: Flat, vm: dict[str, Any]) -> int:
    """Packets from ``vm``'s tap dropped by its anti-spoofing rule against DHCP server replies (sport 67)."""
    h = lab.hosts[vm["hostUuid"]]
    tap = h.run("sh", "-c", f"virsh -c qemu:///system domiflist {vm['uuid']} | awk 'NR>2 && $1 {{print $1}}'"
                ).stdout.split()[0]
    out = h.run("ebtables", "-L", f"zsas-{tap}", "--Lc").stdout
    m = re.search(r"--ip-sport 67 -j DROP\s*,\s*pcnt = (\d+)", out)
    assert m, out
    return int(m.group(1))


def _seed13() -> list[str]:
    """The command lines of the seed's section 13, in order (">>>" prompts; step 7's prompt is ">>")."""
    text = SEED.read_text()
    section = text[text.index("13. Upgrade Virtual Router Provider To Flat Network Provider"):]
    return [ln.lstrip(">") for ln in section.splitlines() if ln.startswith(">>")]


async def test_seed_vm_with_two_l3s_gets_user_data_from_both_datasources(
        lab: Flat, capsys: pytest.CaptureFixture[str]) -> None:
    """Seed 2.2.2 verbatim: ``l3NetworkUuids=A,B defaultL3NetworkUuid=B`` with ``userdata::``. The guest routes
    169.254.169.254 through its first NIC (A's DHCP server, lower metric) and its CloudStack datasource may read
    either lease: the VM's metadata must answer on A as well as on B (it once answered 404 on A)."""
    c = lab.ctl
    l2 = (await c.raw("QueryL3Network", conditions=[{"name": "uuid", "op": "=", "value": c.ids["l3"]}]))[1][
        "inventories"][0]["l2NetworkUuid"]
    flat = (await c.raw("QueryNetworkServiceProvider", conditions=[
        {"name": "type", "op": "=", "value": "Flat"}]))[1]["inventories"][0]["uuid"]
    l3s = []
    for name, net in (("seed-a", "10.102.0"), ("seed-b", "10.103.0")):
        l3 = (await c.inv("CreateL3Network", name=name, l2NetworkUuid=l2))["uuid"]
        await c.inv("AddIpRange", l3NetworkUuid=l3, name=name, startIp=f"{net}.10", endIp=f"{net}.200",
                    netmask="255.255.255.0", gateway=f"{net}.1")
        await c.inv("AttachNetworkServiceToL3Network", l3NetworkUuid=l3,
                    networkServices={flat: ["DHCP", "Userdata"]})
        l3s.append(l3)
    a, b = l3s
    line = _seed_line_with("CreateVmInstance name=vm ", "defaultL3NetworkUuid=", "systemTags='userdata::")
    for seed, ours in (("d720ff0c60ee48d3a2e6263dd3e12c33", c.ids["image"]),
                       ("76789b62aeb542a5b4b8b8488fbaced2", c.ids["offering"]),
                       ("37d3c4a1e2f14a1c8316a23531e62988", a), ("05266285f96245f096f3b7dce671991d", b)):
        assert seed in line
        line = line.replace(seed, ours)
    await _cli("LogInByAccount accountName=admin password=password", capsys)
    vm = (await _cli(line, capsys))["inventory"]
    try:
        assert [n["l3NetworkUuid"] for n in sorted(vm["vmNics"], key=lambda n: n["deviceId"])] == [a, b]
        assert vm["defaultL3NetworkUuid"] == b
        # the seed's text has no "#cloud-config" line: fetched and shown, but not applied (tag advice says so)
        await lab.wait_console(vm, r"tiny-cloudinit: \|  - ubuntu: \[foo,bar\]", timeout=150)
        await lab.wait_console(vm, r"tiny-cloudinit: user-data applied \(unsupported\)", timeout=60)
        # log in: a key for root, applied at the next boot
        await c.inv("CreateSystemTag", resourceUuid=vm["uuid"], resourceType="VmInstanceVO",
                    tag=f"sshkey::{lab.pub}")
        before = len(lab.console(vm))
        await c.inv("RebootVmInstance", uuid=vm["uuid"])
        await lab.wait_console(vm, r"tiny: sshd up", after=before, timeout=150)
        sts = {s.l3NetworkUuid: s for s in await lab.status(vm["hostUuid"])}
        out = await _ssh_ok(lab, vm, "for i in $(seq 40); do [ -f /run/dhcp.eth0.env ] && [ -f /run/dhcp.eth1.env ]"
                            " && break; sleep 0.5; done; ip route get 169.254.169.254; "
                            "for f in /run/dhcp.*.env; do serverid=; . $f; echo \"== cs $serverid\"; "
                            "wget -q -O - http://$serverid/latest/user-data | head -n 3; done; "
                            "echo '== ec2'; wget -q -O - http://169.254.169.254/latest/user-data | head -n 3",
                            timeout=60)
        print(f"\n{out}")
        nic_a = next(n for n in vm["vmNics"] if n["l3NetworkUuid"] == a)
        assert f"via {sts[a].dhcpServerIp} dev eth0" in out and f"src {nic_a['ip']}" in out, out  # the seed's case
        parts = {m.group(1): m.group(2) for m in re.finditer(r"^== (cs \S+|ec2)\n(.*?)(?=^== |\Z)", out, re.M | re.S)}
        assert set(parts) == {f"cs {sts[a].dhcpServerIp}", f"cs {sts[b].dhcpServerIp}", "ec2"}, out
        for name, body in parts.items():
            assert body.startswith("groups:\n - ubuntu: [foo,bar]"), (name, out)
    finally:
        await c.inv("DestroyVmInstance", uuid=vm["uuid"])


def _seed_line_with(prefix: str, *parts: str) -> str:
    return next(x for x in SEED.read_text().splitlines() if x.startswith(prefix) and all(p in x for p in parts))
