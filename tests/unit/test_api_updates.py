"""UpdateSftpBackupStorage, ScanBackupStorage and UpdateKVMHost against in-process SSH servers (SFTP only, no
commands run): new credentials are verified by a real login before they are stored; a refused one changes
nothing; a new address needs the password in the same call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sftp_server import sftp_servers
from test_api_support import _core, cluster, zone

from controller import sealed
from controller.util import new_uuid, now_iso


async def _row(api: Any, table: str, uuid: str) -> dict[str, Any]:
    return dict(await _core(api).db.fetchone(f"SELECT * FROM {table} WHERE uuid=?", (uuid,)))


async def _refused(api: Any, table: str, uuid: str, name: str, status: int, code: str, /, *needles: str,
                   **kw: Any) -> None:
    before = await _row(api, table, uuid)
    got, body = await api.raw(name, uuid=uuid, **kw)
    assert got == status and body["error"]["code"] == code, body
    for n in needles:
        assert n in body["error"]["details"], (n, body)
    assert "secret" not in str(body)
    assert await _row(api, table, uuid) == before


async def test_update_sftp_backup_storage(api: Any, tmp_path: Path) -> None:
    async with sftp_servers(["127.0.0.1", "127.0.0.2"], "secret", exec_commands=False) as servers, \
            sftp_servers(["127.0.0.3"], "other-secret", username="backup", exec_commands=False) as [(h3, p3)]:
        (h1, p1), (h2, p2) = servers
        bs = (await api.call("AddSftpBackupStorage", hostname=h1, username="root", password="secret",
                             url=str(tmp_path / "bs"), name="bs", sshPort=p1))["inventory"]
        u = bs["uuid"]
        inv = (await api.call("UpdateSftpBackupStorage", uuid=u, name="renamed", description="d"))["inventory"]
        assert (inv["name"], inv["description"]) == ("renamed", "d")
        await _refused(api, "BackupStorage", u, "UpdateSftpBackupStorage", 409, "SYS.1006",
                       "wrong username or password", password="bad-password")
        await _refused(api, "BackupStorage", u, "UpdateSftpBackupStorage", 400, "SYS.1007", "field[password]",
                       "new address", hostname=h2, sshPort=p2)
        await _refused(api, "BackupStorage", u, "UpdateSftpBackupStorage", 400, "SYS.1007", "hostname",
                       hostname="bad host", password="secret")
        await _refused(api, "BackupStorage", u, "UpdateSftpBackupStorage", 409, "SYS.1006", h3,
                       hostname=h3, sshPort=p3, password="secret")       # wrong user for that server
        await _refused(api, "BackupStorage", u, "UpdateSftpBackupStorage", 400, "SYS.1007", "sshPort",
                       sshPort=0)
        # moved to another server with its own credentials: verified there, then stored
        inv = (await api.call("UpdateSftpBackupStorage", uuid=u, hostname=h3, sshPort=p3, username="backup",
                              password="other-secret"))["inventory"]
        assert (inv["hostname"], inv["sshPort"], inv["status"]) == (h3, p3, "Connected")
        assert "password" not in inv and "username" not in inv
        row = await _row(api, "BackupStorage", u)
        assert (row["username"], sealed.unseal(_core(api), row["password"])) == ("backup", "other-secret")
        assert "other-secret" not in row["password"] and row["sshHostKeyFingerprint"].startswith("SHA256:")
        # ScanBackupStorage logs in with the stored details and re-measures
        async with _core(api).db.write() as tx:
            await tx.execute("UPDATE BackupStorage SET totalCapacity=1, status='Disconnected' WHERE uuid=?", (u,))
        inv = (await api.call("ScanBackupStorage", backupStorageUuid=u))["inventory"]
        assert inv["status"] == "Connected" and inv["totalCapacity"] > 1
    # the server is gone: the scan says so and marks the storage Disconnected
    got, body = await api.raw("ScanBackupStorage", backupStorageUuid=u)
    assert got == 409 and h3 in body["error"]["details"]
    assert (await _row(api, "BackupStorage", u))["status"] == "Disconnected"
    got, body = await api.raw("UpdateSftpBackupStorage", uuid="8" * 32, name="x")
    assert got == 404 and body["error"]["code"] == "SYS.1003"


async def test_update_kvm_host(api: Any) -> None:
    z = await zone(api)
    c = await cluster(api, z["uuid"])
    async with sftp_servers(["127.0.0.1", "127.0.0.2"], "secret", exec_commands=False) as servers:
        (h1, p1), (h2, p2) = servers
        uuid, now = new_uuid(), now_iso()
        async with _core(api).db.write() as tx:
            await tx.insert("Host", {"uuid": uuid, "name": "h", "zoneUuid": z["uuid"], "clusterUuid": c["uuid"],
                                     "managementIp": h1, "status": "Connected", "username": "root",
                                     "password": "old-secret", "sshPort": p1, "createDate": now,
                                     "lastOpDate": now})
            await tx.insert("Host", {"uuid": new_uuid(), "name": "other", "zoneUuid": z["uuid"],
                                     "clusterUuid": c["uuid"], "managementIp": "127.0.0.9", "createDate": now,
                                     "lastOpDate": now})
        inv = (await api.call("UpdateKVMHost", uuid=uuid, name="h-renamed"))["inventory"]
        assert inv["name"] == "h-renamed" and "password" not in inv
        # the stored password is wrong now (changed on the host): a new one is verified, then stored
        await _refused(api, "Host", uuid, "UpdateKVMHost", 400, "SYS.1007", "wrong username or password",
                       password="still-wrong")
        await api.call("UpdateKVMHost", uuid=uuid, password="secret")
        stored = (await _row(api, "Host", uuid))["password"]
        assert stored != "secret" and sealed.unseal(_core(api), stored) == "secret"     # kept sealed
        await _refused(api, "Host", uuid, "UpdateKVMHost", 400, "SYS.1007", "field[password]", "new address",
                       managementIp=h2, sshPort=p2)
        await _refused(api, "Host", uuid, "UpdateKVMHost", 400, "SYS.1007", "127.0.0.9",
                       managementIp="127.0.0.9", password="secret")
        await _refused(api, "Host", uuid, "UpdateKVMHost", 400, "SYS.1007", "managementIp",
                       managementIp="999.1.1.1", password="secret")
        await _refused(api, "Host", uuid, "UpdateKVMHost", 409, "SYS.1006", "cannot SSH", sshPort=1)
        inv = (await api.call("UpdateKVMHost", uuid=uuid, managementIp=h2, sshPort=p2, password="secret"))[
            "inventory"]
        assert inv["managementIp"] == h2
        assert "secret" not in str(await api.call("QueryHost", conditions=[]))
    got, body = await api.raw("UpdateKVMHost", uuid="9" * 32, name="x")
    assert got == 404 and body["error"]["code"] == "SYS.1003"
