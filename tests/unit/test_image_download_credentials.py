"""Issue 18, security 9 (download url) and 7 (agent side): a host's image download from SFTP backup storage
gets the url without the password (the password and the storage's recorded host key travel in the request
body), and the agent pins that host key: another server at the address gets no password."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import asyncssh
import pytest
from test_ssh_host_keys import PW, ssh_server

from kvmagent.contract import storage as sc
from storage import fetch
from storage.errors import InvalidArgument, TransferFailed


def test_download_command_does_not_show_the_password() -> None:
    cmd = sc.DownloadImageCmd(storagePath="/ps", imageUuid="i", format="qcow2", url="sftp://root@h:22/bs/i.qcow2",
                              sftpPassword=PW, sftpHostKey=None)
    assert PW not in repr(cmd) and PW not in cmd.url
    with pytest.raises(InvalidArgument, match="sftpPassword"):
        fetch.sftp_source(f"sftp://root:{PW}@h/bs/i.qcow2", PW, None)


async def test_agent_pins_the_recorded_backup_storage_key(tmp_path: Path) -> None:
    (tmp_path / "img").write_bytes(b"x" * 4096)
    async with ssh_server() as a:
        async with asyncssh.connect("127.0.0.1", a.port, username="root", password=PW, known_hosts=None,
                                    client_keys=None, agent_path=None) as conn:
            key = conn.get_server_host_key()
            assert key is not None
            recorded = key.export_public_key().decode()
        a.passwords.clear()
        url = f"sftp://root@127.0.0.1:{a.port}{tmp_path}/img"
        async with aiohttp.ClientSession() as session:
            got = await fetch.fetch(fetch.sftp_source(url, PW, recorded), tmp_path / "ok", session=session)
            assert got.size == 4096 and a.passwords == [PW]
            other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
            a.passwords.clear()
            with pytest.raises(TransferFailed, match="recorded SSH host key"):
                await fetch.fetch(fetch.sftp_source(url, PW, other), tmp_path / "bad", session=session)
            assert a.passwords == [] and not (tmp_path / "bad").exists()
