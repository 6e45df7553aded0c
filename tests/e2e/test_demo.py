"""The README's first command: ``scripts/demo`` installs, starts the controller, brings up a simulated KVM host
and boots a VM on it through zstack-cli; a rerun reuses everything; ``--down`` removes the demo.

The demo uses its own testbed (``/var/lib/zstack-py-demo``, prefix ``demo``, 10.96.0) and the controller the
installer runs on port 8080, so it never meets the session testbed of the other e2e tests. A controller that
was not running before the test is stopped after it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo"
CTL = "/opt/zstack-py/venv/bin/zstack-ctl"


def _demo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run([str(DEMO), *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert cp.returncode == 0, f"scripts/demo {' '.join(args)} failed ({cp.returncode}):\n{cp.stdout[-3000:]}\n" \
                               f"{cp.stderr[-3000:]}"
    return cp


def _controller_running() -> bool:
    return subprocess.run([CTL, "status"], capture_output=True, text=True, check=False).returncode == 0


@pytest.fixture
def demo_cleanup() -> Iterator[None]:
    was_running = Path(CTL).exists() and _controller_running()
    try:
        yield
    finally:
        subprocess.run([str(DEMO), "--down"], capture_output=True, timeout=300, check=False)
        if not was_running:
            subprocess.run([CTL, "stop"], capture_output=True, timeout=60, check=False)


def test_demo_boots_a_vm_and_reruns(demo_cleanup: None) -> None:
    first = _demo()
    out = first.stdout + first.stderr
    for cmd in ("AddSftpBackupStorage", "AddImage", "AddKvmHost", "CreateVmInstance"):
        assert re.search(rf">>> zstack-cli {cmd} ", out), f"the demo did not show {cmd}:\n{out[-3000:]}"
    assert '"state": "Running"' in out, out[-3000:]
    ip = re.search(r'"ip": "(\d+\.\d+\.\d+\.\d+)"', out)
    assert ip, out[-3000:]
    assert re.search(rf"guest console:.*tiny: LEASE eth0 {re.escape(ip.group(1))}/", out), out[-3000:]
    assert re.search(rf"dnsmasq lease:.* {re.escape(ip.group(1))} ", out), out[-3000:]
    again = _demo()
    out2 = again.stdout + again.stderr
    assert not re.search(r">>> zstack-cli (AddKvmHost|CreateVmInstance|AddImage) ", out2), \
        f"a rerun created resources again:\n{out2[-3000:]}"
    assert f'"ip": "{ip.group(1)}"' in out2 and '"state": "Running"' in out2, out2[-3000:]
    _demo("--down")
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "demo-h1" not in left, left
