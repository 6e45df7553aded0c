"""Issue 18, security 7: SSH host keys are trusted on first use, recorded (fingerprint in the inventory), a
changed key is refused before any password is sent (naming the expected and the seen fingerprints), and an
administrator accepts a new key by its fingerprint. UpdateHost managementIp checks the new address's key."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh
from apiclient import Api

from controller import sealed
from controller.api.http import CORE
from controller.util import now_iso

PW = "hk-secret-pw"


@dataclasses.dataclass
class Server:
    port: int
    fingerprint: str
    passwords: list[str]


@asynccontextmanager
async def ssh_server(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Server]:
    """An SFTP server with a fresh host key that records every password it is sent."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    seen: list[str] = []

    class S(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            seen.append(password)
            return password == PW

    acc = await asyncssh.listen(host, port, server_host_keys=[key], server_factory=S, sftp_factory=True)
    try:
        yield Server(acc.sockets[0].getsockname()[1], str(key.get_fingerprint("sha256")), seen)
    finally:
        acc.close()
        await acc.wait_closed()


async def test_backup_storage_key_recorded_changed_refused_then_accepted(api: Api, tmp_path: Path) -> None:
    async with ssh_server() as a:
        bs = await api.inv("AddSftpBackupStorage", name="bs", url=str(tmp_path / "bs"), hostname="127.0.0.1",
                           username="root", password=PW, sshPort=a.port)
        assert bs["sshHostKeyFingerprint"] == a.fingerprint and "sshHostKey" not in bs
    async with ssh_server() as b:   # another machine (or a man in the middle) at the storage's address
        core = api.client.app[CORE]
        async with core.db.write() as tx:
            await tx.update("BackupStorage", {"uuid": bs["uuid"]}, {"sshPort": b.port})
        s, body = await api.raw("ReconnectBackupStorage", uuid=bs["uuid"])
        detail = body["error"]["details"]
        assert s == 409 and a.fingerprint in detail and b.fingerprint in detail and "acceptHostKeyFingerprint" in detail
        assert b.passwords == [], "the password was sent to a server with another host key"
        got = (await api.query("QueryBackupStorage", ("uuid", "=", bs["uuid"])))[0]
        assert got["status"] == "Disconnected" and got["sshHostKeyFingerprint"] == a.fingerprint
        s, body = await api.raw("ReconnectBackupStorage", uuid=bs["uuid"], acceptHostKeyFingerprint=a.fingerprint)
        assert s == 409 and b.passwords == []
        s, body = await api.raw("ReconnectBackupStorage", uuid=bs["uuid"], acceptHostKeyFingerprint="nope")
        assert s == 400 and "acceptHostKeyFingerprint" in body["error"]["details"]
        inv = (await api.call("ReconnectBackupStorage", uuid=bs["uuid"], acceptHostKeyFingerprint=b.fingerprint))
        assert inv["inventory"]["status"] == "Connected" and inv["inventory"]["sshHostKeyFingerprint"] == b.fingerprint
        await api.call("ReconnectBackupStorage", uuid=bs["uuid"])   # the new key is the recorded one now


async def test_host_key_checked_on_reconnect_and_new_management_ip(api: Api) -> None:
    core = api.client.app[CORE]
    zone = await api.inv("CreateZone", name="z")
    cluster = await api.inv("CreateCluster", name="c", zoneUuid=zone["uuid"], hypervisorType="KVM")
    async with ssh_server() as a:
        async with ssh_server("127.0.0.2", a.port) as b:
            recorded = None
            async with asyncssh.connect("127.0.0.1", a.port, username="root", password=PW, known_hosts=None,
                                        client_keys=None, agent_path=None) as conn:
                key = conn.get_server_host_key()
                assert key is not None
                recorded = key.export_public_key().decode().strip()
            a.passwords.clear()
            async with core.db.write() as tx:
                await tx.insert("Host", {
                    "uuid": "ab" * 16, "name": "h", "zoneUuid": zone["uuid"], "clusterUuid": cluster["uuid"],
                    "managementIp": "127.0.0.2", "hypervisorType": "KVM", "state": "Enabled",
                    "status": "Disconnected", "username": "root", "password": sealed.seal(core, PW),
                    "sshPort": a.port, "agentPort": 7070, "agentToken": "t" * 48, "sshHostKey": recorded,
                    "sshHostKeyFingerprint": a.fingerprint, "createDate": now_iso(), "lastOpDate": now_iso()})
            # the host's address now answers with another key: reconnect refuses before logging in
            s, body = await api.raw("ReconnectHost", uuid="ab" * 16)
            detail = body["error"]["details"]
            assert s == 502 and a.fingerprint in detail and b.fingerprint in detail, body
            assert b.passwords == []
            # UpdateHost managementIp: the new address is checked (no login) against the recorded key
            s, body = await api.raw("UpdateHost", uuid="ab" * 16, managementIp="127.0.0.1")
            assert s == 200, body  # 127.0.0.1 holds the recorded key
            s, body = await api.raw("UpdateHost", uuid="ab" * 16, managementIp="127.0.0.2")
            detail = body["error"]["details"]
            assert s == 409 and "managementIp" in detail and b.fingerprint in detail and a.fingerprint in detail
            assert (await api.query("QueryHost"))[0]["managementIp"] == "127.0.0.1"
            assert a.passwords == [] and b.passwords == []
            h = await api.call("UpdateHost", uuid="ab" * 16, managementIp="127.0.0.2",
                               acceptHostKeyFingerprint=b.fingerprint)
            assert h["inventory"]["managementIp"] == "127.0.0.2"
            assert h["inventory"]["sshHostKeyFingerprint"] == b.fingerprint
