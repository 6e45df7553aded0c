"""Issue 18, security 6 (credentials): host and backup-storage passwords are stored sealed with a key file
outside the database (0600), never returned in an inventory, never logged; the agent's flat-network state
(VM root passwords in user data) is written 0600."""

from __future__ import annotations

import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from apiclient import Api
from sftp_server import sftp_servers

from controller import sealed
from controller.api.http import CORE
from controller.compute import deploy
from controller.config import ControllerConfig
from flatnet.model import DesiredState
from flatnet.state import StateStore

BS_PW = "bs-Pa55word-7f3a"
HOST_PW = "host-Pa55word-9c1e"


@pytest.fixture
async def sftp_port() -> AsyncIterator[int]:
    async with sftp_servers(["127.0.0.1"], BS_PW, exec_commands=False) as [(_, port)]:
        yield port


def _db_bytes(cfg: ControllerConfig) -> bytes:
    return b"".join(p.read_bytes() for p in Path(cfg.db_path).parent.glob(Path(cfg.db_path).name + "*"))


async def test_backup_storage_and_host_passwords_sealed_never_shown_or_logged(
        api: Api, sftp_port: int, tmp_path: Path, controller_config: ControllerConfig,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    zone = await api.inv("CreateZone", name="z")
    cluster = await api.inv("CreateCluster", name="c", zoneUuid=zone["uuid"], hypervisorType="KVM")
    bs = await api.inv("AddSftpBackupStorage", name="bs", url=str(tmp_path / "bs"), hostname="127.0.0.1",
                       username="root", password=BS_PW, sshPort=sftp_port)
    core = api.client.app[CORE]
    row = await core.db.fetchone("SELECT password FROM BackupStorage WHERE uuid=?", (bs["uuid"],))
    assert row["password"].startswith(sealed.PREFIX) and BS_PW not in row["password"]
    assert sealed.unseal(core, row["password"]) == BS_PW
    seen: list[dict[str, Any]] = []

    async def refuse(core_: Any, host: dict[str, Any], *, new: bool) -> str:
        seen.append(dict(host))
        raise deploy.OperationError("stop here: the test only looks at what was stored")

    monkeypatch.setattr(deploy, "deploy", refuse)
    s, b = await api.raw("AddKvmHost", name="h", managementIp="127.0.0.1", username="root", password=HOST_PW,
                         clusterUuid=cluster["uuid"])
    assert s == 409 and HOST_PW not in str(b)
    assert seen[0]["password"].startswith(sealed.PREFIX) and sealed.unseal(core, seen[0]["password"]) == HOST_PW
    await api.call("ReconnectBackupStorage", uuid=bs["uuid"])     # still logs in with the sealed password
    listed = str(await api.call("QueryBackupStorage", conditions=[])) + str(
        await api.call("QuerySftpBackupStorage", conditions=[])) + str(await api.call("QueryHost", conditions=[]))
    key = sealed.key_path(core)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.parent == Path(controller_config.db_path).parent
    for secret in (BS_PW, HOST_PW):
        assert secret not in listed
        assert secret not in caplog.text, "a password was logged"
        assert secret.encode() not in _db_bytes(controller_config), "a password is in the database in clear"


async def test_clear_passwords_of_older_databases_are_sealed_at_start(api: Api) -> None:
    core = api.client.app[CORE]
    async with core.db.write() as tx:
        await tx.execute("INSERT INTO BackupStorage (uuid, name, url, type, state, status, hostname, username, "
                         "password, sshPort, totalCapacity, availableCapacity, createDate, lastOpDate) VALUES "
                         "('a1', 'old', '/bs', 'SftpBackupStorage', 'Enabled', 'Connected', 'h', 'root', 'clear', "
                         "22, 0, 0, 'x', 'x')")
    assert await sealed.seal_existing(core) == 1
    row = await core.db.fetchone("SELECT password FROM BackupStorage WHERE uuid='a1'")
    assert row["password"].startswith(sealed.PREFIX) and sealed.unseal(core, row["password"]) == "clear"


def test_agent_flat_network_state_is_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(DesiredState())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    store.path.chmod(0o644)   # a file left by an older agent becomes private at the next save
    store.save(DesiredState())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
