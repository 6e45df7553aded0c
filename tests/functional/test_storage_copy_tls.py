"""Host-to-host volume copy between TLS agents (issue 18, security 10): the source verifies the destination
agent's certificate against the controller's CA; a destination it cannot verify gets no byte."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from storage_agent import Agent, NamespacedAgent
from storage_helpers import qio_write

from controller import pki
from kvmagent.contract import storage as c
from kvmagent.contract.tls import client_context
from storage import files, qemuimg

MiB = 1 << 20


def _tls(ca: pki.Ca, d: Path) -> tuple[str, str]:
    d.mkdir(parents=True)
    issued = pki.issue(ca, "dst agent", ["127.0.0.1"])
    pki.write_private(d / "agent.crt", issued.cert_pem)
    pki.write_private(d / "agent.key", issued.key_pem)
    return str(d / "agent.crt"), str(d / "agent.key")


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[tuple[Agent, NamespacedAgent, Path, pki.Ca]]:
    ca = pki.ensure_ca(tmp_path / "ca")
    ps = tmp_path / "ps"
    src = await Agent(tmp_path / "src-state").start()
    dst = await NamespacedAgent(tmp_path / "dst-state", ps, tmp_path / "dst-ps", tls=_tls(ca, tmp_path / "tls")).start()
    try:
        assert dst.url.startswith("https://")
        await src.call(c.InitCmd(storagePath=str(ps), primaryStorageUuid="ps-1", hostUuid="h1"))
        assert src.http is not None
        init = c.InitCmd(storagePath=str(ps), primaryStorageUuid="ps-1", hostUuid="h2")
        async with src.http.post(dst.url + init.PATH, json=init.model_dump(), ssl=client_context(ca_pem=ca.cert_pem),
                                 headers={"Authorization": f"Bearer {dst.token}"}) as r:
            assert r.status == 200, await r.text()
        yield src, dst, ps, ca
    finally:
        dst.kill()
        await src.stop()


async def _volume(src: Agent, ps: Path, tmp_path: Path) -> str:
    img = tmp_path / "base.qcow2"
    await qemuimg.create(img, size=32 * MiB)
    await qio_write(img, 0x5A, 0, 4 * MiB)
    await src.call(c.DownloadImageCmd(storagePath=str(ps), imageUuid="img-1", format="qcow2", url=f"file://{img}"))
    vol = await src.call(c.CreateVolumeFromCacheCmd(storagePath=str(ps), accountUuid="a1", volumeUuid="v1",
                                                    imageUuid="img-1"))
    return str(vol.installPath)


async def test_copy_to_a_tls_agent_pins_the_ca(agents: tuple[Agent, NamespacedAgent, Path, pki.Ca],
                                               tmp_path: Path) -> None:
    src, dst, ps, ca = agents
    vol = await _volume(src, ps, tmp_path)
    on_dst = tmp_path / "dst-ps" / Path(vol).relative_to(ps)
    cmd = c.CopyToRemoteCmd(storagePath=str(ps), paths=[vol], destAgentUrl=dst.url, destToken=dst.token)
    # the source trusts only the system's CAs: the destination is refused before any byte is sent
    body = await src.call(cmd, expect=502)
    assert "certificate" in body["error"]["message"].lower(), body
    assert not on_dst.exists()
    # another CA: refused too
    src.service.peer_tls = client_context(ca_pem=pki.ensure_ca(tmp_path / "other-ca").cert_pem)
    body = await src.call(cmd, expect=502)
    assert "certificate" in body["error"]["message"].lower(), body
    assert not on_dst.exists()
    # the controller's CA: copied, checksums agree
    src.service.peer_tls = client_context(ca_pem=ca.cert_pem)
    reply = await src.call(cmd)
    assert [x.path for x in reply.copied] == [vol]
    assert files.file_digest(on_dst, "sha256") == files.file_digest(Path(vol), "sha256")
