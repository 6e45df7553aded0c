"""``UpdateKVMHost`` (1.0): name, description, managementIp and the SSH credentials of a KVM host.

* name/description are written as given.
* New SSH details (username, password, sshPort, managementIp) are re-verified BEFORE they are stored: one SSH
  login with the resulting details through :func:`verify_ssh`, the single place this API opens SSH. It uses
  ``deploy._login``, where AddKvmHost and reconnects log in too: the server must first present the host's
  recorded SSH host key (or the one ``acceptHostKeyFingerprint`` names; a host never seen records it), so the
  password is never sent to an impostor; a changed key is 409 naming both fingerprints. A refused login is 400
  SYS.1007 ("wrong username or password"), an unreachable host 409 SYS.1006; nothing is written either way.
  The password is stored sealed (``controller.sealed``).
* Changing ``managementIp`` needs ``password`` in the same call: the stored password is never sent to an
  address it was not given for. The new address must be valid and not used by another host (400); like
  UpdateHost it takes effect at the host's next reconnect.
* The password is never returned or logged (the Host inventory hides it).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from controller import sealed, sshkeys
from controller.api.context import ApiContext
from controller.api.messages import UpdateMessage
from controller.api.registry import api, by_uuid
from controller.compute import deploy
from controller.compute.hosts import check_management_ip
from controller.errors import InvalidArgument
from controller.util import now_iso


class UpdateKVMHostMsg(UpdateMessage):
    managementIp: str | None = Field(default=None, min_length=1, max_length=255)
    username: str | None = Field(default=None, min_length=1, max_length=255)
    password: str | None = Field(default=None, min_length=1, max_length=255)
    sshPort: int | None = Field(default=None, ge=1, le=65535)
    #: accept a changed SSH host key whose fingerprint (SHA256:...) was verified on the host's console
    acceptHostKeyFingerprint: str | None = Field(default=None, max_length=100)


async def verify_ssh(ctx: ApiContext, host: dict[str, Any], accept: str | None) -> None:
    """Log in to ``host`` (managementIp, sshPort, username, password; host key pinned) once and log out."""
    conn = await deploy._login(ctx.core, host, accept)
    conn.close()
    await conn.wait_closed()


@api("UpdateKVMHost", UpdateKVMHostMsg, job=True, queue=by_uuid)
async def update_kvm_host(ctx: ApiContext, msg: UpdateKVMHostMsg) -> dict[str, Any]:
    """Update a KVM host; new SSH credentials or address are verified by logging in before they are stored."""
    sshkeys.validate_fingerprint(msg.acceptHostKeyFingerprint)
    row = await ctx.require("Host", msg.uuid, "uuid")
    if row["hypervisorType"] != "KVM":
        raise InvalidArgument(f"invalid field[uuid]: host[uuid:{msg.uuid}] is a {row['hypervisorType']} host, "
                              "not KVM")
    values: dict[str, Any] = {k: v for k, v in (("name", msg.name), ("description", msg.description))
                              if v is not None}
    ssh = sshkeys.credential_changes(msg, row, "managementIp", check_management_ip)
    if msg.managementIp is not None and msg.managementIp != row["managementIp"]:
        if await ctx.db.fetchone("SELECT 1 FROM Host WHERE managementIp=? AND uuid<>?", (msg.managementIp, msg.uuid)):
            raise InvalidArgument(f"invalid field[managementIp]: there has been a host having managementIp"
                                  f"[{msg.managementIp}]")
    if ssh:
        new = {**dict(row), **ssh}
        if not new["username"] or not new["password"]:
            raise InvalidArgument("invalid field[password]: the host has no stored SSH credentials; give both "
                                  "username and password")
        await verify_ssh(ctx, new, msg.acceptHostKeyFingerprint)
        values.update(ssh)
        if "password" in values:
            values["password"] = sealed.seal(ctx, values["password"])
    if values:
        async with ctx.db.write() as tx:
            if "managementIp" in values and await tx.fetchone("SELECT 1 FROM Host WHERE managementIp=? AND uuid<>?",
                                                              (values["managementIp"], msg.uuid)):
                raise InvalidArgument(f"invalid field[managementIp]: managementIp[{values['managementIp']}] is taken")
            await tx.update("Host", {"uuid": msg.uuid}, {**values, "lastOpDate": now_iso()})
    return {"inventory": await ctx.inventory("Host", msg.uuid)}
