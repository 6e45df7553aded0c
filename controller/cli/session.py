"""Where the CLI keeps its state, and the per-controller session store.

The CLI home is ``$ZSTACK_CLI_HOME`` if set, else ``~/.zstack-py``. It holds ``session`` (JSON map of
controller URL -> session uuid, mode 0600), ``history`` and ``api-cache.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def cli_home() -> Path:
    """The CLI's state directory (not created here)."""
    env = os.environ.get("ZSTACK_CLI_HOME")
    return Path(env) if env else Path.home() / ".zstack-py"


class SessionStore:
    """Session uuids per controller URL in one file readable only by its owner.

    Reads never raise (missing/corrupt file = no session). Writes are atomic and create the file with
    mode 0600 (the directory with 0700). Forgetting the last session deletes the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}

    def get(self, url: str) -> str | None:
        """The session uuid for the controller at ``url``, if any."""
        return self._read().get(url)

    def put(self, url: str, session_uuid: str) -> None:
        """Remember ``session_uuid`` for ``url`` (replacing an older one)."""
        data = self._read()
        data[url] = session_uuid
        self._write(data)

    def forget(self, url: str) -> None:
        """Drop the session of ``url``; idempotent."""
        data = self._read()
        if data.pop(url, None) is None:
            return
        if data:
            self._write(data)
        else:
            self.path.unlink(missing_ok=True)

    def _write(self, data: dict[str, str]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".session.")  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
