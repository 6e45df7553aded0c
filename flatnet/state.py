"""Persistence of the desired state: ``<state_dir>/flatnet/state.json``, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from flatnet.model import DesiredState


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "flatnet"
        self.path = self.root / "state.json"

    def load(self) -> DesiredState:
        """The last saved state; an empty state if none was saved yet."""
        try:
            return DesiredState.model_validate_json(self.path.read_text())
        except FileNotFoundError:
            return DesiredState()

    def save(self, state: DesiredState) -> None:
        """Write-then-rename with fsync: a crash leaves the old or the new file, never a torn one. The file
        holds VM user data (root passwords, keys): 0600 in a 0700 directory."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(state.model_dump_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def l3_dir(self, key: str) -> Path:
        return self.root / "l3" / key

    def l3_dirs(self) -> list[Path]:
        d = self.root / "l3"
        return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []
