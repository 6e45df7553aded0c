"""Issue 13's first "Must show": a whole estate built with the PREVIOUS release survives the upgrade to this
working tree.

The previous release is built from git history: ``git archive`` of the tag :data:`PREVIOUS_TAG` (or of the commit
it points to, :data:`PREVIOUS_COMMIT`, when the clone has the history but not the tag), so its code and schema
really are the old ones (0.1.0: schema 2, no agent protocol level, plaintext host passwords, HTTP agents; the
upgrade runs migrations 0003-0010, among them data migrations). Only when the history is missing (a shallow clone)
does the test fall back to this tree with a version override, plus one extra migration in the new build so that
a migration still runs; it prints loudly which was used.

Both releases are installed under a temporary prefix with ``controller.release`` (``scripts/install.sh``'s
release install); the old one runs as a daemon. With it the test builds, on a 2-host nspawn testbed: zone,
cluster, L2/L3 with an IP range and the Flat provider's DHCP + user data, local primary storage, an SFTP backup
storage (on host 2) holding the image, both hosts (their agents installed over SSH from the old wheel), a
running VM (host 1, user data + SSH key), a stopped VM and a Delay-destroyed VM (host 2), a data volume with a
snapshot, a user tag and system tags, changed global configs. Then the documented upgrade, as
``scripts/install.sh -u`` runs it: ``python3 -m controller.release install <new wheel>`` and the NEW release's
``zstack-ctl upgrade <release dir>`` (install.sh's other steps are machine-wide: packages, /etc, the unit).

Then: every ``Query*`` API of the old release answers the same (:data:`EXCLUDED` lists what is left out and
why); the running VM's QEMU process is the same; its DHCP lease renews and its user data is served (from inside
the guest, over SSH); both hosts' agents report the new release, which their own venvs hold; and a feature the
old release did not have works (a security group on the running VM's NIC: SSH from the allowed address still
gets in, ICMP that got through before is dropped).

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
from lab import LabHost, Testbed, TinyImage, bring_up, reset_host, ssh_keypair, tear_down

from controller import release
from controller.version import VERSION

REPO = Path(__file__).resolve().parents[2]
PREVIOUS_TAG = "v0.1.0"
PREVIOUS_COMMIT = "f2513dec23efafa4b987a22a7883183eb7937f37"  # what PREVIOUS_TAG points to
FALLBACK_VERSION = "0.1.99"  # the old release when the history is missing: this tree, version overridden
STATE_DIR = Path(os.environ.get("ZSTACK_E2E_UG_TESTBED_DIR", "/var/lib/zstack-py-testbed-e2e-ug"))
PREFIX, MGMT_NET = "ug", "10.92.0"
PASSWORD = "upgrade-e2e-pw"
PS_URL = "/var/lib/zstack-py/e2e-ug-localps"
BS_URL = "/var/lib/zstack-py/e2e-ug-bs"
CONSOLE = "/var/lib/zstack-py/console"
USERDATA = "estate-user-data-7c41"
UD_URL = "http://169.254.169.254/latest/user-data"
AGENT_BOUND = 300.0  # controller start + 2 reconnects (wheel upload, pip in the host, restart), 2 busy cores
BOOT_BOUND = 300.0  # a TCG guest's boot to its DHCP lease on 2 busy cores
#: Inventory fields not compared, with the reason. Everything else of every record of every Query* API of the
#: old release must be equal; fields the new release adds (absent before) are listed, not compared.
EXCLUDED = {
    # The upgrade reconnects both hosts (their agents are redeployed): a host's status goes Connected ->
    # Connecting -> Connected, which stamps lastOpDate; the connect re-reads each host's local-storage disk, whose
    # free space is this machine's (other processes write to it), stamping lastOpDate of the refs and the storage.
    ("QueryHost", "lastOpDate"): "the post-upgrade reconnect changes the host's status and back",
    ("QueryLocalStorageHostRef", "availablePhysicalCapacity"): "the disk's free space, re-read at the reconnect",
    ("QueryLocalStorageHostRef", "lastOpDate"): "stamped by that re-read",
    ("QueryPrimaryStorage", "availablePhysicalCapacity"): "the sum of the hosts' re-read free space",
    ("QueryPrimaryStorage", "lastOpDate"): "stamped by that re-read",
    # The new release registers the router image the upgrade brought (system_images) on the backup storage, which
    # re-measures its capacity (this machine's free disk space) and stamps it.
    ("QueryBackupStorage", "availableCapacity"): "re-measured after the new router image was registered on it",
    ("QueryBackupStorage", "lastOpDate"): "stamped by that re-measure",
    ("QuerySftpBackupStorage", "availableCapacity"): "re-measured after the new router image was registered on it",
    ("QuerySftpBackupStorage", "lastOpDate"): "stamped by that re-measure",
    # Sessions: the upgrade's own login and the test's (sessions are not the estate).
    ("QuerySession", "*"): "the test logs in again after the upgrade",
}
#: Fields of an inherent system tag (a host's facts: os::version::..., capability:liveSnapshot, ...) not compared:
#: every connect deletes and re-writes them from the host's report (0.1.0 did too), and the upgrade reconnects
#: both hosts. They are matched by host and tag text instead, so each must still be there, with the same text.
INHERENT = ("uuid", "createDate", "lastOpDate")
#: Query APIs allowed to answer records the old release did not have (records of the estate must all be there,
#: equal); why the new release has them.
NEW_RECORDS = {
    "QueryGlobalConfig": "the new release's new settings",
    "QueryNetworkServiceProvider": "the new release's providers (SecurityGroup, VirtualRouter)",
    "QueryImage": "the new release's router image, registered as a system image at its start",
    "QueryImageBackupStorageRef": "that image's copy on the backup storage",
}


# ---------------------------------------------------------------------------------------------- releases


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)


def _set_version(tree: Path, version: str) -> None:
    for rel, key in (("pyproject.toml", "version"), ("kvmagent/contract/version.py", "RELEASE")):
        f = tree / rel
        text, n = re.subn(rf'^{key} = "[^"]+"', f'{key} = "{version}"', f.read_text(), count=1, flags=re.M)
        assert n == 1, rel
        f.write_text(text)


def _copy_tree(dst: Path) -> Path:
    shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(".git", "tests", "docs", "build", "*.egg-info",
                                                             "__pycache__", ".mypy_cache", ".ruff_cache"))
    return dst


def previous_release(dst: Path) -> tuple[Path, str]:
    """The previous release's source tree in ``dst`` and how it was got ("git archive <ref>" or "FALLBACK...")."""
    for ref in (PREVIOUS_TAG, PREVIOUS_COMMIT):
        if _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
            continue
        dst.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
        return dst, f"git archive {ref}"
    _set_version(_copy_tree(dst), FALLBACK_VERSION)
    return dst, (f"FALLBACK: neither {PREVIOUS_TAG} nor {PREVIOUS_COMMIT} is in this clone's history: the old "
                 f"release is THIS tree with version {FALLBACK_VERSION}")


def _tree_version(tree: Path) -> str:
    m = re.search(r'^version = "([^"]+)"', (tree / "pyproject.toml").read_text(), re.M)
    assert m, tree
    return m.group(1)


def _schema(tree: Path) -> int:
    return max(int(p.name[:4]) for p in (tree / "controller" / "db" / "migrations").iterdir() if p.name[:4].isdigit())


# ---------------------------------------------------------------------------------------------- testbed


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return ssh_keypair(tmp_path_factory.mktemp("ug-keys"))


@pytest.fixture(scope="module")
def ug_testbed(tiny: TinyImage, keys: tuple[Path, str]) -> Iterator[Testbed]:
    tear_down(STATE_DIR)
    tb = bring_up(STATE_DIR, hosts=2, prefix=PREFIX, mgmt_net=MGMT_NET, mode="nspawn",
                  shares=(tiny.qcow2.parent, keys[0].parent))
    try:
        yield tb
    finally:
        tear_down(STATE_DIR)


class Site:
    """One installation under a temporary prefix: its config (keys the old release knows too: its config
    forbids unknown ones), data, logs and the controller's API."""

    def __init__(self, root: Path) -> None:
        self.root, self.prefix = root, root / "opt"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg = root / "controller.json"
        self.packages = root / "packages"
        self.pidfile = root / "controller.pid"
        self.cfg.write_text(json.dumps({
            "listen_host": "0.0.0.0", "port": self.port, "db_path": str(root / "data" / "controller.db"),
            "log_dir": str(root / "log"), "admin_password": PASSWORD, "agent_package_dir": str(self.packages)}))
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZSTACK_CONTROLLER_CONFIG")}
        self.env.update({"ZSTACK_PREFIX": str(self.prefix), "ZSTACK_CTL_MANAGER": "daemon",
                         "ZSTACK_CTL_PIDFILE": str(self.pidfile)})
        self.session = ""
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def add_system_image_dir(self) -> Path:
        """Point the config's import and system image directories (keys of the new release) into this site."""
        system = self.root / "import" / "system"
        system.mkdir(parents=True)
        cfg = json.loads(self.cfg.read_text())
        cfg.update(image_import_dirs=[str(self.root / "import")], system_image_dir=str(system))
        self.cfg.write_text(json.dumps(cfg))
        return system

    def release_cmd(self, *args: str) -> str:
        """``python3 -m controller.release`` from this checkout, as scripts/install.sh runs it."""
        cp = subprocess.run(["/usr/bin/python3", "-m", "controller.release", "--prefix", str(self.prefix), *args],
                            capture_output=True, text=True, timeout=1500, check=False,
                            env={**self.env, "PYTHONPATH": str(REPO)})
        assert cp.returncode == 0, cp.stdout + cp.stderr
        return cp.stdout.strip()

    def ctl(self, release_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(release_dir / "venv" / "bin" / "zstack-ctl"), "--config", str(self.cfg), *args],
                              capture_output=True, text=True, env=self.env, timeout=1200, check=False)

    def start_old(self, release_dir: Path) -> None:
        """What the old release's ``zstack-ctl start`` does where systemd does not run (a daemon with the pid
        file ``zstack-ctl`` reads); run directly because 0.1.0's ctl would use the systemd unit wherever systemd
        runs (it has no ``ZSTACK_CTL_MANAGER``)."""
        (self.root / "log").mkdir(exist_ok=True)
        with open(self.root / "log" / "controller.out", "ab") as out:
            proc = subprocess.Popen([str(release.python(release_dir)), "-P", "-m", "controller.server", "--config",
                                     str(self.cfg)], stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env,
                                    start_new_session=True, close_fds=True)
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with self.opener.open(f"{self.url}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert proc.poll() is None, (self.root / "log" / "controller.out").read_text()[-3000:]
            time.sleep(0.5)
        raise AssertionError("the old release did not become ready")

    def get(self, path: str) -> Any:
        with self.opener.open(f"{self.url}{path}", timeout=60) as r:
            return json.loads(r.read())

    def _http(self, req: urllib.request.Request) -> dict[str, Any]:
        try:
            with self.opener.open(req, timeout=300) as r:
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
        deadline = time.monotonic() + 900
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

    def login(self) -> None:
        self.session = ""
        self.session = self.inv("LogInByAccount", accountName="admin", password=PASSWORD)["uuid"]


# ---------------------------------------------------------------------------------------------- the estate


def _qemu_pid(h: LabHost, uuid: str) -> int | None:
    pids = h.run("pgrep", "-f", f"guest={uuid}", check=False).stdout.split()
    return int(pids[0]) if pids else None


def _console(h: LabHost, uuid: str) -> str:
    return h.run("cat", f"{CONSOLE}/{uuid}.log", check=False).stdout


def _wait_console(h: LabHost, uuid: str, pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + BOOT_BOUND
    while True:
        m = re.search(pattern, _console(h, uuid))
        if m:
            return m
        assert time.monotonic() < deadline, f"{pattern!r} not on {uuid}'s console:\n{_console(h, uuid)[-3000:]}"
        time.sleep(1)


def _flat_ns(h: LabHost) -> str:
    (ns,) = [n for n in h.run("ip", "netns", "list").stdout.split() if n.startswith("zsfn-")]
    return ns


def _guest(h: LabHost, key: Path, ip: str, command: str, *, bound: float = 120) -> str:
    """``command`` in the guest over SSH from the host's flat namespace (the guest's L3), retried while sshd
    does not answer; its stdout (AssertionError when it keeps failing)."""
    deadline = time.monotonic() + bound
    while True:
        cp = h.run("ip", "netns", "exec", _flat_ns(h), "ssh", "-i", str(key), "-o", "BatchMode=yes", "-o",
                   "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o",
                   "ConnectTimeout=8", f"root@{ip}", command, check=False, timeout=90)
        if cp.returncode == 0:
            return cp.stdout
        assert time.monotonic() < deadline, f"ssh {command!r} to {ip}: rc={cp.returncode} {cp.stdout} {cp.stderr}"
        time.sleep(2)


def _pings(h: LabHost, ip: str) -> bool:
    """Whether ``ip`` answers ICMP echo from the host's flat namespace (busybox: the host tree has no iputils)."""
    return h.run("ip", "netns", "exec", _flat_ns(h), "busybox", "ping", "-c", "3", "-w", "8", ip, check=False,
                 timeout=30).returncode == 0


def _build_estate(s: Site, tb: Testbed, tiny: TinyImage, pub: str) -> dict[str, Any]:
    h1, h2 = tb.hosts[:2]
    s.call("UpdateGlobalConfig", category="host", name="ping.interval", value="7")
    s.call("UpdateGlobalConfig", category="vm", name="expungePeriod", value="604800")  # the Delay VM stays
    zone = s.inv("CreateZone", name="estate-zone", description="built by the previous release")
    cluster = s.inv("CreateCluster", name="estate-cluster", zoneUuid=zone["uuid"], hypervisorType="KVM")
    l2 = s.inv("CreateL2NoVlanNetwork", name="estate-l2", zoneUuid=zone["uuid"], physicalInterface="eth0")
    s.call("AttachL2NetworkToCluster", l2NetworkUuid=l2["uuid"], clusterUuid=cluster["uuid"])
    l3 = s.inv("CreateL3Network", name="estate-l3", l2NetworkUuid=l2["uuid"])
    s.call("AddIpRange", l3NetworkUuid=l3["uuid"], name="r", startIp="10.100.0.10", endIp="10.100.0.200",
           netmask="255.255.255.0", gateway="10.100.0.1")
    (flat,) = s.query("QueryNetworkServiceProvider", type="Flat")
    s.call("AttachNetworkServiceToL3Network", l3NetworkUuid=l3["uuid"],
           networkServices={flat["uuid"]: ["DHCP", "Userdata"]})
    ps = s.inv("AddLocalPrimaryStorage", name="estate-ls", zoneUuid=zone["uuid"], url=PS_URL)
    s.call("AttachPrimaryStorageToCluster", primaryStorageUuid=ps["uuid"], clusterUuid=cluster["uuid"])
    bs = s.inv("AddSftpBackupStorage", name="estate-bs", hostname=h2.ip, username=h2.ssh_user,
               password=h2.ssh_password, url=BS_URL)
    s.call("AttachBackupStorageToZone", backupStorageUuid=bs["uuid"], zoneUuid=zone["uuid"])
    image = s.inv("AddImage", name="tiny", url=f"file://{tiny.qcow2}", format="qcow2",
                  backupStorageUuids=[bs["uuid"]])
    assert image["status"] == "Ready", image
    off = s.inv("CreateInstanceOffering", name="tiny", cpuNum=1, cpuSpeed=1000, memorySize=128 << 20)
    disk = s.inv("CreateDiskOffering", name="small", diskSize=64 << 20)
    hosts = [s.inv("AddKVMHost", name=h.name, managementIp=h.ip, username=h.ssh_user, password=h.ssh_password,
                   clusterUuid=cluster["uuid"]) for h in (h1, h2)]
    assert all(h["status"] == "Connected" for h in hosts), hosts

    def vm(name: str, host: dict[str, Any], *tags: str) -> dict[str, Any]:
        return s.inv("CreateVmInstance", name=name, instanceOfferingUuid=off["uuid"], imageUuid=image["uuid"],
                     l3NetworkUuids=[l3["uuid"]], hostUuid=host["uuid"], systemTags=list(tags))

    running = vm("estate-running", hosts[0], f"sshkey::{pub}", f"userdata::{USERDATA}")
    stopped = vm("estate-stopped", hosts[1])
    destroyed = vm("estate-destroyed", hosts[1])
    s.call("StopVmInstance", uuid=stopped["uuid"])
    s.call("DestroyVmInstance", uuid=destroyed["uuid"])
    volume = s.inv("CreateDataVolume", name="estate-data", diskOfferingUuid=disk["uuid"])
    s.call("AttachDataVolumeToVm", volumeUuid=volume["uuid"], vmInstanceUuid=stopped["uuid"])
    snapshot = s.inv("CreateVolumeSnapshot", volumeUuid=volume["uuid"], name="estate-snap")
    s.call("CreateUserTag", resourceType="VmInstanceVO", resourceUuid=running["uuid"], tag="estate-user-tag")
    s.call("CreateSystemTag", resourceType="HostVO", resourceUuid=hosts[0]["uuid"], tag="reservedMemory::64M")
    states = {v["name"]: v["state"] for v in s.query("QueryVmInstance")}
    assert states == {"estate-running": "Running", "estate-stopped": "Stopped",
                      "estate-destroyed": "Destroyed"}, states
    return {"running": running, "hosts": hosts, "snapshot": snapshot, "l3": l3}


def _query_apis(s: Site) -> list[str]:
    doc = s.get("/v1/openapi.json")
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in doc["paths"]}
    return sorted(n for n in names if n.startswith("Query"))


def _dump(s: Site, apis: list[str]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for api in apis:
        if ("*" in {k for a, k in EXCLUDED if a == api}):
            continue
        invs = s.call(api, conditions=[])["inventories"]
        out[api] = sorted(invs, key=lambda i: json.dumps(i, sort_keys=True)
                          if "uuid" not in i else str(i["uuid"]))
    return out


def _identity(api: str, inv: dict[str, Any], inherent: bool) -> str:
    """What one record is matched by: a global config by category and name, an inherent tag by its resource and
    text (:data:`INHERENT`), anything else by its uuid, the uuids it refers to and its types (a ref record's
    ``uuid`` is one side's: QueryLocalStorageHostRef's is the primary storage's; an L3's network services are
    one record per provider and service type)."""
    if api == "QueryGlobalConfig":
        return f"{inv['category']}.{inv['name']}"
    if inherent:
        return f"inherent {inv['resourceUuid']} {inv['tag']}"
    ids = {k: v for k, v in inv.items() if (k == "uuid" or k.endswith(("Uuid", "Type"))) and isinstance(v, str)}
    return json.dumps(ids or inv, sort_keys=True)


def _walk(where: str, field: str, api: str, b: Any, a: Any, diffs: list[str], added: set[str],
          inherent: bool = False) -> None:
    """Compare one record (or a value in it) before/after; ``field``: its path in the record, without indexes."""
    if isinstance(b, dict) and isinstance(a, dict):
        for k in b:
            if not field and ((api, k) in EXCLUDED or (inherent and k in INHERENT)):
                continue
            if k not in a:
                diffs.append(f"{where}.{k}: gone after the upgrade (was {b[k]!r})")
            else:
                _walk(f"{where}.{k}", f"{field}.{k}", api, b[k], a[k], diffs, added)
        added.update(f"{api}{field}.{k}" for k in a if k not in b)
    elif isinstance(b, list) and isinstance(a, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(b, a, strict=True)):
            _walk(f"{where}[{i}]", f"{field}[]", api, x, y, diffs, added)
    elif b != a:
        diffs.append(f"{where}: {b!r} -> {a!r}")


def _differences(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], set[str], dict[str, list[str]]]:
    """(differences, fields the new release added, records only the new release has) between two dumps.
    A record is matched by its uuid (a global config by category and name); :data:`EXCLUDED` fields are
    skipped."""
    diffs: list[str] = []
    added: set[str] = set()
    new_records: dict[str, list[str]] = {}
    # QueryTag answers the same tags without the flag: the inherent ones are known by their uuids
    inherent = {t["uuid"] for d in (before, after) for t in d.get("QuerySystemTag", []) if t.get("inherent")}
    for api, invs in before.items():
        now = {_identity(api, i, i.get("uuid") in inherent): i for i in after[api]}
        for b in invs:
            ident = _identity(api, b, b.get("uuid") in inherent)
            if ident not in now:
                diffs.append(f"{api}[{ident}]: gone after the upgrade: {b}")
                continue
            _walk(f"{api}[{ident}]", "", api, b, now.pop(ident), diffs, added, b.get("uuid") in inherent)
        if now:
            new_records[api] = sorted(now)
    return diffs, added, new_records


def _router_image_registered(s: Site, name: str) -> None:
    """The router image the upgrade brought is registered, once, as a system image on the backup storage."""
    t0, images = time.monotonic(), []
    while time.monotonic() - t0 < 120:
        images = [i for i in s.query("QueryImage") if i["name"] == name]
        if images and images[0]["status"] == "Ready":
            break
        time.sleep(1)
    assert len(images) == 1 and images[0]["status"] == "Ready" and images[0]["system"], images
    (bs,) = s.query("QueryBackupStorage")
    assert [r["backupStorageUuid"] for r in images[0]["backupStorageRefs"]] == [bs["uuid"]], images
    print(f"router image registered {time.monotonic() - t0:.1f} s after the agents' upgrade")


# ---------------------------------------------------------------------------------------------- the test


def test_upgrade_from_the_previous_release_keeps_the_whole_estate(ug_testbed: Testbed, tiny: TinyImage,
                                                                   keys: tuple[Path, str], tmp_path: Path) -> None:
    key, pub = keys
    h1, h2 = ug_testbed.hosts[:2]
    old_tree, how = previous_release(tmp_path / "src-old")
    print(f"\n{'!' * 100}\n" if how.startswith("FALLBACK") else "\n", f"previous release: {how}", sep="")
    if how.startswith("FALLBACK"):
        print("!" * 100)
    old_version, old_schema = _tree_version(old_tree), _schema(old_tree)
    new_tree = _copy_tree(tmp_path / "src-new")
    if how.startswith("FALLBACK"):  # so that a migration runs: the new build gets one more (a data migration)
        (new_tree / "controller" / "db" / "migrations" / "0900_upgrade_e2e.sql").write_text(
            "CREATE TABLE UpgradeE2eMarker (note TEXT);\nINSERT INTO UpgradeE2eMarker VALUES ('migrated');\n")
    new_schema = _schema(new_tree)
    assert old_version != VERSION and old_schema < new_schema, (old_version, old_schema, VERSION, new_schema)
    print(f"upgrading {old_version} (schema {old_schema}) -> {VERSION} (schema {new_schema})")
    dist = tmp_path / "dist"
    old_wheel, new_wheel = release.build_wheel(old_tree, dist), release.build_wheel(new_tree, dist)
    shutil.rmtree(old_tree)
    shutil.rmtree(new_tree)

    s = Site(tmp_path)
    old = Path(s.release_cmd("install", "--switch", str(old_wheel)))
    # The old release builds the agent wheel it installs on hosts from its own source tree, which a release
    # install does not have; its wheel in agent_package_dir is what it takes instead (0.1.0's _find_wheel).
    s.packages.mkdir()
    shutil.copy2(old_wheel, s.packages / old_wheel.name)
    s.start_old(old)
    try:
        s.login()
        assert s.call("GetVersion")["version"] == old_version
        estate = _build_estate(s, ug_testbed, tiny, pub)
        vm = estate["running"]
        ip = vm["vmNics"][0]["ip"]
        m = _wait_console(h1, vm["uuid"], r"tiny: LEASE eth0 (\S+)/")
        assert m.group(1) == ip, m.group(0)
        assert _guest(h1, key, ip, f"wget -q -O - {UD_URL}") == USERDATA
        assert _pings(h1, ip), "the running VM does not answer pings before the upgrade"
        qemu = _qemu_pid(h1, vm["uuid"])
        assert qemu is not None
        apis = _query_apis(s)
        assert len(apis) >= 30, apis
        before = _dump(s, apis)
        assert len(before["QueryVmInstance"]) == 3 and len(before["QueryVolumeSnapshot"]) == 1

        # the documented upgrade (scripts/install.sh -u): install the new release beside the old one, then the
        # NEW release's zstack-ctl upgrades to it
        t0 = time.monotonic()
        new = Path(s.release_cmd("install", str(new_wheel)))
        # what install.sh -u also does: it leaves the new release's router image for the controller to register.
        # Here in this site's own directory (the machine's /var/lib/zstack-py/import/system is not the test's);
        # the keys are the new release's (0.1.0's config forbids them), written once the old release has started.
        system = s.add_system_image_dir()
        router_image = system / f"zstack-vrouter-{VERSION}.qcow2"
        subprocess.run(["qemu-img", "create", "-f", "qcow2", str(router_image), "32M"], check=True,
                       capture_output=True, timeout=60)
        up = s.ctl(new, "upgrade", str(new))
        out = up.stdout + up.stderr
        print(out)
        assert up.returncode == 0, out
        assert f"upgrading {old_version} (schema {old_schema}) -> {VERSION} (schema {new_schema}" in out, out
        assert f"schema migrated to version {new_schema}" in out, out
        for h in (h1, h2):
            assert f"host {h.name} {h.ip}" in out, out  # the pre-flight lists the hosts
        assert release.current(s.prefix) == new and release.previous(s.prefix) == old
        print(f"controller upgraded in {time.monotonic() - t0:.1f} s")
        assert _qemu_pid(h1, vm["uuid"]) == qemu, "the running VM's QEMU process changed during the upgrade"

        s.login()
        version = s.call("GetVersion")
        assert version["version"] == VERSION and version["schemaVersion"] == new_schema, version
        t1, hosts = time.monotonic(), []
        while time.monotonic() - t1 < AGENT_BOUND:
            hosts = s.query("QueryHost")
            if all(h["status"] == "Connected" and h["agentVersion"] == VERSION for h in hosts):
                break
            time.sleep(2)
        print(f"both agents upgraded {time.monotonic() - t1:.1f} s after the controller's upgrade")
        assert len(hosts) == 2 and all(h["status"] == "Connected" and h["agentVersion"] == VERSION
                                       and not h["agentUpgradeNeeded"] for h in hosts), hosts
        for h in (h1, h2):
            installed = h.run("/opt/zstack-py/venv/bin/python", "-c",
                              "from kvmagent.contract.version import RELEASE; print(RELEASE)").stdout.strip()
            assert installed == VERSION, (h.name, installed)
        assert _qemu_pid(h1, vm["uuid"]) == qemu, "the running VM's QEMU process changed (agent upgrade)"

        _router_image_registered(s, router_image.stem)
        after = _dump(s, apis)
        (tmp_path / "queries.json").write_text(json.dumps({"before": before, "after": after}, indent=1))
        diffs, added, new_records = _differences(before, after)
        print(f"{len(apis)} Query APIs compared; excluded: {sorted(f'{a}.{k}' for a, k in EXCLUDED)}; "
              f"fields the new release adds: {sorted(added)}; records only it has: {new_records}")
        print("differences:", *diffs, sep="\n  ")
        assert diffs == [], "\n".join(diffs)
        assert set(new_records) <= set(NEW_RECORDS), new_records

        # the running VM: its lease renews and its user data is served, by the upgraded agent's services
        renew = _guest(h1, key, ip, "udhcpc -i eth0 -n -q -t 4 -T 2 -s /bin/true 2>&1")
        assert f"lease of {ip} obtained" in renew, renew
        assert _guest(h1, key, ip, f"wget -q -O - {UD_URL}") == USERDATA
        assert _pings(h1, ip), "the running VM does not answer pings after the upgrade"

        # a feature 0.1.0 did not have: a security group on the running VM's NIC
        (provider,) = s.query("QueryNetworkServiceProvider", type="SecurityGroup")
        s.call("AttachNetworkServiceToL3Network", l3NetworkUuid=estate["l3"]["uuid"],
               networkServices={provider["uuid"]: ["SecurityGroup"]})
        sg = s.inv("CreateSecurityGroup", name="after-upgrade")
        s.call("AttachSecurityGroupToL3Network", securityGroupUuid=sg["uuid"], l3NetworkUuid=estate["l3"]["uuid"])
        dhcp_ip = h1.run("ip", "netns", "exec", _flat_ns(h1), "sh", "-c",
                         "ip -4 -o addr show | awk '$2 != \"lo\" {print $4}' | grep -v '^169.254' | head -1"
                         ).stdout.strip().split("/")[0]
        s.call("AddSecurityGroupRule", securityGroupUuid=sg["uuid"], rules=[
            {"type": "Ingress", "protocol": "TCP", "startPort": 22, "endPort": 22, "allowedCidr": f"{dhcp_ip}/32"}])
        s.call("AddVmNicToSecurityGroup", securityGroupUuid=sg["uuid"], vmNicUuids=[vm["vmNics"][0]["uuid"]])
        deadline = time.monotonic() + 120
        while _pings(h1, ip):
            assert time.monotonic() < deadline, "ICMP still reaches the VM 120 s after its security group applied"
            time.sleep(2)
        assert _guest(h1, key, ip, "echo allowed") == "allowed\n"
        assert _qemu_pid(h1, vm["uuid"]) == qemu
    finally:
        if s.pidfile.exists():
            cur = release.current(s.prefix)
            if cur is not None:
                s.ctl(cur, "stop")
        for h in (h1, h2):
            reset_host(h, flat=True, paths=(PS_URL, BS_URL, CONSOLE), log_tail=30, agent_out_tail=20)
