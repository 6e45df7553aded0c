"""A controller upgrade with a running VM on a real host (issue 13): release A (this checkout with a version
override) is installed under a temporary prefix and runs as a daemon; it adds a 1-host nspawn testbed host over
SSH (the host's own venv gets A's wheel) and starts a VM there; ``zstack-ctl upgrade <wheel B>`` (B: a bumped
version and one extra migration, built here from the checkout) upgrades the controller; the controller then
reconnects the host by itself and redeploys B's agent. The VM's QEMU process is the same throughout, the
records are the same, the host's agent reports B.

Own testbed: prefix ``ug``, 10.92.0.0/24, ``/var/lib/zstack-py-testbed-e2e-ug``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab import PS_URL, LabHost, Testbed, TinyImage, bring_up, reset_host, tear_down

from controller import release

REPO = Path(__file__).resolve().parents[2]
A, B = "0.91.0", "0.91.1"
STATE_DIR = Path(os.environ.get("ZSTACK_E2E_UG_TESTBED_DIR", "/var/lib/zstack-py-testbed-e2e-ug"))
PREFIX, MGMT_NET = "ug", "10.92.0"
PASSWORD = "upgrade-e2e-pw"
AGENT_BOUND = 240.0  # controller start + reconnect + wheel upload + pip upgrade in the host + restart, 2 busy cores


def _tree(dst: Path, version: str, migration: tuple[str, str] | None = None) -> Path:
    shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".git", "tests", "docs", "build", "*.egg-info",
                                                             "__pycache__", ".mypy_cache", ".ruff_cache"))
    for rel, key in (("pyproject.toml", "version"), ("kvmagent/contract/version.py", "RELEASE")):
        f = dst / rel
        text, n = re.subn(rf'^{key} = "[^"]+"', f'{key} = "{version}"', f.read_text(), count=1, flags=re.M)
        assert n == 1, rel
        f.write_text(text)
    if migration:
        (dst / "controller" / "db" / "migrations" / migration[0]).write_text(migration[1])
    return dst


@pytest.fixture(scope="module")
def ug_testbed(tiny: TinyImage) -> Iterator[Testbed]:
    tear_down(STATE_DIR)
    tb = bring_up(STATE_DIR, hosts=1, prefix=PREFIX, mgmt_net=MGMT_NET, mode="nspawn", shares=(tiny.qcow2.parent,))
    try:
        yield tb
    finally:
        tear_down(STATE_DIR)


class Site:
    def __init__(self, root: Path, tiny: TinyImage) -> None:
        self.prefix = root / "opt"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg = root / "controller.json"
        self.cfg.write_text(json.dumps({
            "listen_host": "0.0.0.0", "port": self.port, "db_path": str(root / "data" / "controller.db"),
            "log_dir": str(root / "log"), "admin_password": PASSWORD, "agent_package_dir": str(root / "packages"),
            "image_import_dirs": [str(tiny.qcow2.parent)], "allow_host_local_images": True}))
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZSTACK_CONTROLLER_CONFIG")}
        self.env.update({"ZSTACK_PREFIX": str(self.prefix), "ZSTACK_CTL_MANAGER": "daemon",
                         "ZSTACK_CTL_PIDFILE": str(root / "controller.pid")})
        self.session = ""
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.prefix / "current" / "venv" / "bin" / "zstack-ctl"), "--config",
                               str(self.cfg), *args], capture_output=True, text=True, env=self.env, timeout=900,
                              check=False)

    def _http(self, req: urllib.request.Request) -> dict[str, Any]:
        try:
            with self.opener.open(req, timeout=120) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            return dict(json.loads(e.read() or b"{}"))

    def call(self, api: str, **body: Any) -> dict[str, Any]:
        """The API's result (a job is waited for); AssertionError on a failure."""
        headers = {"Content-Type": "application/json"}
        if self.session:
            headers["Authorization"] = f"OAuth {self.session}"
        reply = self._http(urllib.request.Request(f"{self.url}/v1/{api}", data=json.dumps(body).encode(),
                                                  headers=headers))
        deadline = time.monotonic() + 600
        while reply.get("jobUuid") and "inventory" not in reply and "inventories" not in reply:
            assert time.monotonic() < deadline, (api, reply)
            time.sleep(0.5)
            job = self._http(urllib.request.Request(f"{self.url}/v1/jobs/{reply['jobUuid']}", headers=headers))
            if job.get("state") != "Processing":
                reply = job.get("result") or job
        assert "error" not in reply or not reply["error"], (api, reply)
        return reply

    def inv(self, api: str, **body: Any) -> dict[str, Any]:
        return dict(self.call(api, **body)["inventory"])

    def query(self, api: str, **cond: str) -> list[dict[str, Any]]:
        conditions = [{"name": k, "op": "=", "value": v} for k, v in cond.items()]
        return list(self.call(api, conditions=conditions)["inventories"])


def _qemu_pid(h: LabHost, uuid: str) -> int | None:
    pids = h.run("pgrep", "-f", f"guest={uuid}", check=False).stdout.split()
    return int(pids[0]) if pids else None


def _records(s: Site, tiny: TinyImage, h: LabHost) -> dict[str, str]:
    zone = s.inv("CreateZone", name="z")
    cluster = s.inv("CreateCluster", name="c", zoneUuid=zone["uuid"], hypervisorType="KVM")
    l2 = s.inv("CreateL2NoVlanNetwork", name="l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
    s.call("AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"], clusterUuid=cluster["uuid"])
    l3 = s.inv("CreateL3Network", name="l3", l2NetworkUuid=l2["uuid"])
    s.call("AddIpRange", l3NetworkUuid=l3["uuid"], name="r", startIp="10.100.0.10", endIp="10.100.0.200",
           netmask="255.255.255.0", gateway="10.100.0.1")
    ps = s.inv("AddLocalPrimaryStorage", name="ls", zoneUuid=zone["uuid"], url=PS_URL)
    s.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cluster["uuid"])
    off = s.inv("CreateInstanceOffering", name="tiny", cpuNum=1, cpuSpeed=1000, memorySize=128 << 20)
    image = s.inv("AddImage", name="tiny", url=f"file://{tiny.qcow2}", format="qcow2")
    host = s.inv("AddKVMHost", name=h.name, managementIp=h.ip, username=h.ssh_user, password=h.ssh_password,
                 clusterUuid=cluster["uuid"])
    assert host["status"] == "Connected" and host["agentVersion"] == A, host
    s.call("UpdateGlobalConfig", category="host", name="ping.interval", value="2")
    return {"l3": l3["uuid"], "offering": off["uuid"], "image": image["uuid"], "host": host["uuid"]}


def _estate(s: Site) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q in ("QueryZone", "QueryCluster", "QueryL3Network", "QueryImage", "QueryInstanceOffering",
              "QueryPrimaryStorage", "QueryVolume"):
        out[q] = sorted(s.query(q), key=lambda i: str(i["uuid"]))
    out["vms"] = [(v["uuid"], v["state"], v["hostUuid"], [n["ip"] for n in v["vmNics"]])
                  for v in s.query("QueryVmInstance")]
    for inv in out["QueryPrimaryStorage"]:  # the host's reconnect re-reads its disk (capacity, lastOpDate)
        for k in [k for k in inv if "Capacity" in k or k == "lastOpDate"]:
            inv.pop(k)
    return out


def _differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    out = []
    for q in before:
        if before[q] == after[q]:
            continue
        if len(before[q]) != len(after[q]) or not all(isinstance(x, dict) for x in before[q]):
            out.append(f"{q}: {before[q]} != {after[q]}")
            continue
        for b, a in zip(before[q], after[q], strict=True):
            out += [f"{q} {b.get('uuid')} {k}: {b.get(k)!r} -> {a.get(k)!r}" for k in sorted(set(b) | set(a))
                    if b.get(k) != a.get(k)]
    return out


def test_controller_upgrade_with_a_running_vm_then_agent_upgraded(ug_testbed: Testbed, tiny: TinyImage,
                                                                   tmp_path: Path) -> None:
    h = ug_testbed.hosts[0]
    wheels = {}
    for version, mig in ((A, None), (B, ("0900_upgrade_e2e_noop.sql", "SELECT 1;\n"))):
        src = _tree(tmp_path / f"src-{version}", version, mig)
        wheels[version] = release.build_wheel(src, tmp_path / "dist")
        shutil.rmtree(src)
    s = Site(tmp_path, tiny)
    release.switch(s.prefix, release.install(wheels[A], s.prefix))
    started = s.ctl("start", "--wait", "90")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        s.session = s.inv("LogInByAccount", accountName="admin", password=PASSWORD)["uuid"]
        ids = _records(s, tiny, h)
        vm = s.inv("CreateVmInstance", name="survivor", instanceOfferingUuid=ids["offering"],
                   imageUuid=ids["image"], l3NetworkUuids=[ids["l3"]])
        assert vm["state"] == "Running", vm
        qemu = _qemu_pid(h, vm["uuid"])
        assert qemu is not None
        before = _estate(s)

        up = s.ctl("upgrade", str(wheels[B]))
        out = up.stdout + up.stderr
        assert up.returncode == 0, out
        assert f"host {h.name} {h.ip}" in out and f"Connected, agent {A}" in out, out  # pre-flight lists it
        assert _qemu_pid(h, vm["uuid"]) == qemu
        s.session = s.inv("LogInByAccount", accountName="admin", password=PASSWORD)["uuid"]
        assert s.call("GetVersion")["version"] == B
        t0, host = time.monotonic(), {}
        while time.monotonic() - t0 < AGENT_BOUND:
            host = s.query("QueryHost", uuid=ids["host"])[0]
            if host["status"] == "Connected" and host["agentVersion"] == B:
                break
            time.sleep(1)
        print(f"\nthe controller upgraded the host's agent to {B} {time.monotonic() - t0:.1f} s after its own "
              f"upgrade (bound {AGENT_BOUND:.0f} s)")
        assert host.get("agentVersion") == B and host.get("status") == "Connected", host
        installed = h.run("/opt/zstack-py/venv/bin/python", "-c",
                          "from kvmagent.contract.version import RELEASE; print(RELEASE)").stdout.strip()
        assert installed == B
        assert _qemu_pid(h, vm["uuid"]) == qemu, "the VM's QEMU process was restarted"
        assert _differences(before, _estate(s)) == []
        assert s.query("QueryVmInstance", uuid=vm["uuid"])[0]["state"] == "Running"
    finally:
        if (s.prefix / "current").exists():
            s.ctl("stop")
        reset_host(h)
