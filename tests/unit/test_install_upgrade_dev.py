"""``scripts/install.sh -u`` on a machine that runs a development install (an editable venv, no release under
the prefix): refused before anything is installed, since a switch to a release there would migrate the database
at the next start with no backup and no rollback (issue 13)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_upgrade_of_a_development_install_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    venv, prefix = tmp_path / "venv", tmp_path / "prefix"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = {**os.environ, "ZSTACK_VENV": str(venv), "ZSTACK_PREFIX": str(prefix)}
    cp = subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "-u"], env=env, capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 2, cp
    assert "development install" in cp.stderr and "nothing changed" in cp.stderr, cp.stderr
    assert str(venv) in cp.stderr and "zstack-ctl backup" in cp.stderr, cp.stderr
    assert not prefix.exists()
