"""Issue 11 end to end: testbed hosts that boot a real systemd (``scripts/testbed up --mode nspawn``).

AddKvmHost installs the agent's wheel over SSH into the host's own venv and runs it as the systemd unit
``zstack-py-kvmagent``; a SIGKILLed agent is restarted by systemd and reconnected by the controller while its
VM keeps running; a host reboot brings the agent back by itself and the controller marks the host's VMs
Stopped (their domains went away with the reboot, as they do in ZStack 1.0); the agent's journal shows the
request id that the controller logged for a VM start; ``down`` leaves nothing, also after ``up`` was killed
half-way and after a whole e2e session was killed in the middle of a test. This module brings up its own 1-host
nspawn testbed (prefix ``sd``, 10.94.0.0/24) so it runs whatever mode the session testbed has.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import (
    TESTBED,
    LabHost,
    Testbed,
    TinyImage,
    bring_up,
    footprint,
    leftovers,
    reset_host,
    run_testbed,
    tear_down,
)
from test_compute import Ctl, running_controller

from controller.api.http import CORE

STATE_DIR = Path(os.environ.get("ZSTACK_E2E_SD_TESTBED_DIR", "/var/lib/zstack-py-testbed-e2e-sd"))
PREFIX = os.environ.get("ZSTACK_E2E_SD_PREFIX", "sd")
MGMT_NET = os.environ.get("ZSTACK_E2E_SD_MGMT_NET", "10.94.0")
UNIT = "zstack-py-kvmagent"
# Bounds (seconds) for the controller to see what the host did: restart delay 1 s + ping interval 1 s +
# a reconnect (deploy check over SSH + connect sequence) on 2 busy cores.
SIGKILL_BOUND = 30.0
REBOOT_BOUND = 45.0


@pytest.fixture(scope="module")
def sd_testbed(tiny: TinyImage) -> Iterator[Testbed]:
    tear_down(STATE_DIR)
    t0 = time.monotonic()
    tb = bring_up(STATE_DIR, hosts=1, prefix=PREFIX, mgmt_net=MGMT_NET, mode="nspawn",
                  shares=(tiny.qcow2.parent,))
    print(f"\nnspawn testbed (1 host) up in {time.monotonic() - t0:.2f} s")
    try:
        yield tb
    finally:
        fp = footprint(tb)
        tear_down(STATE_DIR)
        left = leftovers(fp) + _name_leftovers(STATE_DIR, PREFIX, 1)
        assert not left, f"scripts/testbed down left: {left}"


@pytest.fixture
async def sd(sd_testbed: Testbed, tiny: TinyImage) -> AsyncIterator[tuple[Ctl, LabHost, dict[str, Any]]]:
    """A controller with the 1-host nspawn testbed's host added (over SSH) and pinged every second."""
    h = sd_testbed.hosts[0]
    async with running_controller("systemd-hosts", tiny) as c:
        await c.inv("UpdateGlobalConfig", category="host", name="ping.interval", value="1")
        t0 = time.monotonic()
        inv = await c.add_host(h)
        print(f"\nAddKvmHost on an nspawn host (wheel install into its venv + unit): {time.monotonic() - t0:.1f} s")
        assert inv["status"] == "Connected", inv
        try:
            yield c, h, inv
        finally:
            reset_host(h, agent_out_tail=0)


def _unit(h: LabHost, *props: str) -> dict[str, str]:
    out = h.run("systemctl", "show", UNIT, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _domstate(h: LabHost, uuid: str) -> str:
    cp = h.run("virsh", "-c", "qemu:///system", "domstate", uuid, check=False)
    return cp.stdout.strip() if cp.returncode == 0 else "absent"


def _qemu_pid(h: LabHost, uuid: str) -> int | None:
    cp = h.run("pgrep", "-f", f"guest={uuid}", check=False)
    pids = cp.stdout.split()
    return int(pids[0]) if pids else None


async def _host_row(c: Ctl, uuid: str) -> dict[str, Any]:
    row = await c.client.app[CORE].db.fetchone("SELECT * FROM Host WHERE uuid=?", (uuid,))
    return dict(row)


async def _create_vm(c: Ctl, name: str) -> dict[str, Any]:
    vm = await c.inv("CreateVmInstance", name=name, instanceOfferingUuid=c.ids["offering"],
                     imageUuid=c.ids["image"], l3NetworkUuids=[c.ids["l3"]])
    assert vm["state"] == "Running", vm
    return vm


async def test_agent_is_an_enabled_systemd_unit_installed_from_a_wheel(sd: tuple[Ctl, LabHost, dict]) -> None:
    _, h, _ = sd
    assert h.run("systemctl", "is-system-running", check=False).stdout.strip() == "running"
    props = _unit(h, "ActiveState", "UnitFileState", "Restart", "RestartUSec", "LimitNOFILE", "KillMode",
                  "ExecStart")
    assert props["ActiveState"] == "active" and props["UnitFileState"] == "enabled", props
    assert props["Restart"] == "always" and props["RestartUSec"] == "1s" and props["LimitNOFILE"] == "65536", props
    assert props["KillMode"] == "process", props
    # the agent runs from the host's own venv, installed from the uploaded wheel (not this machine's editable
    # install: the host does not even see /opt/zstack-py of this machine)
    where = h.run("/opt/zstack-py/venv/bin/python", "-c", "import kvmagent; print(kvmagent.__file__)").stdout
    assert where.startswith("/opt/zstack-py/venv/lib/python3"), where
    assert h.run("sh", "-c", "ls /var/lib/zstack-py/packages/zstack_py-*.whl").returncode == 0


async def test_sigkill_agent_systemd_restarts_it_vm_keeps_running(sd: tuple[Ctl, LabHost, dict]) -> None:
    c, h, inv = sd
    vm = await _create_vm(c, "sigkill")
    qemu = _qemu_pid(h, vm["uuid"])
    assert qemu is not None and _domstate(h, vm["uuid"]) == "running"
    old_pid = int(_unit(h, "MainPID")["MainPID"])
    old_boot = (await _host_row(c, inv["uuid"]))["agentBootId"]
    t0 = time.monotonic()
    h.run("kill", "-KILL", str(old_pid))
    # systemd restarts it (RestartSec=1)
    new_pid, t_restarted = old_pid, None
    while time.monotonic() - t0 < 15:
        props = _unit(h, "MainPID", "ActiveState", "NRestarts")
        new_pid = int(props["MainPID"])
        if props["ActiveState"] == "active" and new_pid not in (0, old_pid):
            t_restarted = time.monotonic() - t0
            break
        await asyncio.sleep(0.1)
    assert t_restarted is not None, f"systemd did not restart the agent: {props}"
    assert int(props["NRestarts"]) >= 1, props
    # the controller reconnects it (new boot id seen by the ping) and its view equals the host's
    seen = None
    while time.monotonic() - t0 < SIGKILL_BOUND:
        row = await _host_row(c, inv["uuid"])
        cur = await c.vm(vm["uuid"])
        if row["status"] == "Connected" and row["agentBootId"] != old_boot and cur["state"] == "Running" \
                and _domstate(h, vm["uuid"]) == "running":
            seen = time.monotonic() - t0
            break
        await asyncio.sleep(0.1)
    print(f"\nSIGKILL of the agent: systemd restarted it after {t_restarted:.2f} s; controller Connected with the "
          f"new agent and VM Running = host's view after {seen if seen is None else round(seen, 2)} s "
          f"(bound {SIGKILL_BOUND:.0f} s)")
    assert seen is not None, f"host {row['status']}, new boot id {row['agentBootId'] != old_boot}, VM {cur['state']}"
    assert _qemu_pid(h, vm["uuid"]) == qemu, "the VM's QEMU process was restarted with the agent"


async def test_vm_start_request_id_in_controller_log_and_host_journal(
        sd: tuple[Ctl, LabHost, dict], caplog: pytest.LogCaptureFixture) -> None:
    c, h, inv = sd
    caplog.set_level(logging.INFO, logger="controller.compute.agents")
    vm = await _create_vm(c, "journal")  # defines and starts the domain through /vm/start
    sent = [m.groups() for r in caplog.records
            if (m := re.search(r"agent call path=/vm/start host=(\S+) request_id=(\S+) vm=(\S+)", r.getMessage()))]
    assert sent and sent[-1][0] == inv["uuid"] and sent[-1][2] == vm["uuid"], caplog.text
    rid = sent[-1][1]
    journal = ""
    for _ in range(50):  # journald may lag the agent's write by a moment
        journal = h.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat", "--grep", rid, check=False).stdout
        if rid in journal:
            break
        await asyncio.sleep(0.1)
    print(f"\ncontroller: agent call /vm/start request_id={rid}\nhost journal: {journal.strip()}")
    assert re.search(rf"request path=/vm/start request_id={rid} status=200 seconds=[\d.]+ vm={vm['uuid']}", journal)


async def test_host_reboot_agent_back_by_itself_vms_stopped(sd: tuple[Ctl, LabHost, dict], sd_testbed: Testbed) -> None:
    c, h, inv = sd
    vm = await _create_vm(c, "reboot")
    old_boot = (await _host_row(c, inv["uuid"]))["agentBootId"]
    t0 = time.monotonic()
    cp = run_testbed(sd_testbed.state_dir, "reboot", h.name)
    t_boot = time.monotonic() - t0
    print(f"\n{cp.stdout.strip()}")
    # the agent comes back by itself: nobody but systemd starts it
    t_agent = None
    while time.monotonic() - t0 < 20:
        if h.run("systemctl", "is-active", UNIT, check=False).stdout.strip() == "active":
            t_agent = time.monotonic() - t0
            break
        await asyncio.sleep(0.1)
    assert t_agent is not None, h.run("journalctl", "-u", UNIT, "-n", "30", "--no-pager", check=False).stdout
    # the domain did not survive the reboot (defined, autostart off: shut off; a transient one: absent)
    assert _domstate(h, vm["uuid"]) in ("shut off", "absent")
    seen = None
    while time.monotonic() - t0 < REBOOT_BOUND:
        row = await _host_row(c, inv["uuid"])
        cur = await c.vm(vm["uuid"])
        if row["status"] == "Connected" and row["agentBootId"] != old_boot and cur["state"] == "Stopped":
            seen = time.monotonic() - t0
            break
        await asyncio.sleep(0.1)
    print(f"host reboot: container back in {t_boot:.2f} s, agent active after {t_agent:.2f} s, controller "
          f"Connected + VM Stopped after {seen if seen is None else round(seen, 2)} s (bound {REBOOT_BOUND:.0f} s)")
    assert seen is not None, f"host {row['status']}, VM {cur['state']}"
    # and the host is usable again: the VM starts on it
    assert (await c.inv("StartVmInstance", uuid=vm["uuid"]))["state"] == "Running"
    assert _domstate(h, vm["uuid"]) == "running"


def _name_leftovers(state_dir: Path, prefix: str, hosts: int) -> list[str]:
    """What a testbed of this name could leave even when no footprint was taken: namespaces, links, mounts,
    cgroups, nspawn's /run/systemd/nspawn entries, processes naming the state dir, the state dir."""
    names = [f"{prefix}-phys", *(f"{prefix}-h{i}" for i in range(1, hosts + 1))]
    left = [f"netns {n}" for n in names if os.path.exists(f"/run/netns/{n}")]
    left += [f"link {prefix}-mgmt"] if os.path.exists(f"/sys/class/net/{prefix}-mgmt") else []
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {m}" for m in (line.split()[4] for line in f) if m.startswith(str(state_dir))]
    for i in range(1, hosts + 1):
        for hier in ("systemd", "unified"):
            g = Path(f"/sys/fs/cgroup/{hier}/zstack-testbed-{prefix}-h{i}")
            if g.exists():
                left.append(f"cgroup {g}")
        if os.path.exists(f"/run/systemd/nspawn/propagate/{prefix}-h{i}"):
            left.append(f"/run/systemd/nspawn/propagate/{prefix}-h{i}")
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state_dir) in cmd and int(entry) != os.getpid():
            left.append(f"process {entry}: {cmd[:120]}")
    if state_dir.exists():
        left.append(f"state dir {state_dir}")
    return left


@pytest.mark.parametrize("kill_after", [0.3, 0.8])
def test_down_leaves_nothing_after_up_was_killed_half_way(kill_after: float, tiny: TinyImage) -> None:
    """``testbed up`` SIGKILLed while it builds or boots (its container keeps running, detached); ``down``
    still removes everything."""
    state = Path(f"{STATE_DIR}-killed")
    prefix, net = f"{PREFIX}k", "10.93.0"
    tear_down(state)
    p = subprocess.Popen([str(TESTBED), "--state-dir", str(state), "up", "2", "--prefix", prefix,
                          "--mgmt-net", net, "--mode", "nspawn"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(kill_after)
    p.send_signal(signal.SIGKILL)
    out = p.communicate()[0].decode()
    booted = [line for line in out.splitlines() if "booted" in line]
    cgroups = [g for g in Path("/sys/fs/cgroup/systemd").glob(f"zstack-testbed-{prefix}-h*")]
    print(f"\nup killed after {kill_after} s: {len(booted)} host(s) reported booted, {len(cgroups)} container "
          "cgroup(s) existed")
    cp = run_testbed(state, "down")
    left = _name_leftovers(state, prefix, 2)
    assert not left, f"down after a killed up left: {left}\n{cp.stdout}"


KILLED_TEST = "tests/e2e/test_lab.py::test_guest_gets_its_lease_from_its_own_host"
KILLED_TEST_BOUND = 240.0  # the inner session's testbed up + two TCG guests booting, on 2 busy cores


def test_down_leaves_nothing_after_a_test_was_killed_half_way(tmp_path: Path) -> None:
    """A real e2e session on nspawn hosts SIGKILLed in the middle of a test: its guests run, its inner
    namespaces hold dnsmasq and a metadata server, and no fixture teardown ever runs. ``down`` (what the next
    session's conftest runs first) removes everything the testbed had while the test was running."""
    state, prefix, net = Path(f"{STATE_DIR}-killed-test"), f"{PREFIX}t", "10.91.0"
    tear_down(state)
    env = {**os.environ, "ZSTACK_E2E_TESTBED_DIR": str(state), "ZSTACK_E2E_PREFIX": prefix,
           "ZSTACK_E2E_MGMT_NET": net, "ZSTACK_E2E_TESTBED_MODE": "nspawn"}
    repo = Path(__file__).resolve().parents[2]
    # its own basetemp: a nested session must not rotate away this session's numbered temporary directories
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          f"--basetemp={tmp_path / 'inner'}", KILLED_TEST], cwd=repo, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    fp, t0 = None, time.monotonic()
    try:
        while fp is None and p.poll() is None and time.monotonic() - t0 < KILLED_TEST_BOUND:
            time.sleep(0.5)
            fp = _mid_test_footprint(state)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        out = p.communicate()[0].decode(errors="replace")
    killed_at = time.monotonic() - t0
    try:
        assert fp is not None, f"the inner test never had guests and namespaces up (rc {p.returncode}):\n{out}"
        print(f"\ninner session SIGKILLed after {killed_at:.1f} s with {len(fp.pids)} process(es) in its testbed")
    finally:
        cp = run_testbed(state, "down")
    left = (leftovers(fp) if fp else []) + _name_leftovers(state, prefix, 2)
    assert not left, f"down after a killed test left: {left}\n{cp.stdout}"


def _mid_test_footprint(state: Path) -> Any:
    """The testbed's footprint once its test is in the middle of its work (a guest runs in each host and h1
    has an inner namespace), else None."""
    try:
        tb = Testbed.load(state)
    except (AssertionError, ValueError, KeyError, subprocess.TimeoutExpired):
        return None  # not up yet
    for h in tb.hosts:
        cp = h.run("sh", "-c", "virsh -c qemu:///system list --name --state-running; ip netns list", check=False,
                   timeout=20)
        if cp.returncode != 0 or "e2e-" not in cp.stdout or "dhcp-" not in cp.stdout:
            return None
    return footprint(tb)


async def test_host_reboot_ha_lite_starts_the_lost_vm_again(sd: tuple[Ctl, LabHost, dict], sd_testbed: Testbed) -> None:
    """With ``ha/restartLostVms`` (beyond 1.0, off by default) the VM the reboot took down runs again; a VM
    stopped through the API before the reboot stays Stopped."""
    c, h, inv = sd
    await c.inv("UpdateGlobalConfig", category="ha", name="restartLostVms", value="true")
    lost = await _create_vm(c, "ha-lost")
    kept = await _create_vm(c, "ha-stopped")
    assert (await c.inv("StopVmInstance", uuid=kept["uuid"], type="cold"))["state"] == "Stopped"
    t0 = time.monotonic()
    run_testbed(sd_testbed.state_dir, "reboot", h.name)
    seen = None
    while time.monotonic() - t0 < REBOOT_BOUND:
        cur = await c.vm(lost["uuid"])
        if cur["state"] == "Running" and _domstate(h, lost["uuid"]) == "running" \
                and (await _host_row(c, inv["uuid"]))["status"] == "Connected":
            seen = time.monotonic() - t0
            break
        await asyncio.sleep(0.2)
    print(f"\nHA-lite: the VM lost by the reboot runs again {seen if seen is None else round(seen, 2)} s after the "
          "reboot began")
    assert seen is not None, f"lost VM {cur['state']} / domain {_domstate(h, lost['uuid'])}"
    assert (await c.vm(kept["uuid"]))["state"] == "Stopped" and _domstate(h, kept["uuid"]) != "running"


AGENT_UPGRADE_BOUND = 180.0  # restart + ping + reconnect + a forced pip reinstall in the host + restart, 2 busy cores


async def test_outdated_agent_upgraded_on_reconnect_vm_keeps_running(sd: tuple[Ctl, LabHost, dict]) -> None:
    """The host's agent runs another build (a changed source file in its venv, restarted: it reports another
    digest): the controller's reconnect redeploys the controller's wheel over SSH and restarts the agent, which
    comes back reporting the controller's digest; the VM's QEMU process is never restarted."""
    from controller.compute.deploy import agent_digest

    c, h, inv = sd
    vm = await _create_vm(c, "agent-upgrade")
    qemu = _qemu_pid(h, vm["uuid"])
    assert qemu is not None
    init = h.run("/opt/zstack-py/venv/bin/python", "-c", "import kvmagent; print(kvmagent.__file__)").stdout.strip()
    assert init.startswith("/opt/zstack-py/venv/lib/python3"), init
    h.run("sh", "-c", f"echo '# an older build of the agent' >> {init}")
    t0 = time.monotonic()
    h.run("systemctl", "restart", UNIT)
    seen, row = None, {}
    while time.monotonic() - t0 < AGENT_UPGRADE_BOUND:
        row = await _host_row(c, inv["uuid"])
        if row["status"] == "Connected" and row["agentDigest"] == agent_digest() \
                and "older build" not in h.run("cat", init).stdout:
            seen = time.monotonic() - t0
            break
        await asyncio.sleep(0.5)
    print(f"\nan outdated agent redeployed and reconnected after {seen if seen is None else round(seen, 2)} s "
          f"(bound {AGENT_UPGRADE_BOUND:.0f} s)")
    assert seen is not None, f"host {row.get('status')}, agent digest {row.get('agentDigest')}"
    assert (await c.vm(vm["uuid"]))["state"] == "Running" and _domstate(h, vm["uuid"]) == "running"
    assert _qemu_pid(h, vm["uuid"]) == qemu, "the VM's QEMU process was restarted with the agent"


async def test_security_group_rules_reach_the_kernel_of_an_nspawn_host(sd: tuple[Ctl, LabHost, dict]) -> None:
    """A security-group push works on a host under systemd: the host's tree has nftables, the agent loads
    the VM NIC's rule set and the controller records the host as current; removing the NIC from the group
    removes the tables."""
    c, h, inv = sd
    core = c.client.app[CORE]
    l3 = c.ids["l3"]
    [provider] = (await c.raw("QueryNetworkServiceProvider", conditions=[
        {"name": "type", "op": "=", "value": "SecurityGroup"}]))[1]["inventories"]
    await c.inv("AttachNetworkServiceToL3Network", l3NetworkUuid=l3, networkServices={provider["uuid"]:
                                                                                       ["SecurityGroup"]})
    vm = await _create_vm(c, "secgroup")
    nic = vm["vmNics"][0]
    sg = await c.inv("CreateSecurityGroup", name="web")
    await c.inv("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=l3)
    await c.inv("AddSecurityGroupRule", securityGroupUuid=sg["uuid"], rules=[
        {"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22, "allowedCidr": "10.0.0.0/8"}])
    await c.inv("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic["uuid"]])
    st = dict(await core.db.fetchone("SELECT * FROM SecurityGroupHostState WHERE hostUuid=?", (inv["uuid"],)))
    assert st["lastError"] is None and st["appliedGeneration"] == st["wantedGeneration"] >= 1, st
    table = h.run("nft", "list", "table", "inet", "zstack_sg").stdout
    chain = "in_" + nic["internalName"].replace(".", "_").replace("-", "_")
    assert f"chain {chain} " in table and "tcp dport 22" in table and "10.0.0.0/8" in table, table
    assert f'"{nic["internalName"]}"' in h.run("nft", "list", "table", "bridge", "zstack_sg").stdout
    await c.inv("DeleteVmNicFromSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[nic["uuid"]])
    assert h.run("nft", "list", "table", "inet", "zstack_sg", check=False).returncode != 0
