"""The DHCP server IP of an L3 network using the Flat provider (reference §3.2).

Guarantees:

* One address per L3, allocated from the L3's ranges (the lowest free one) the first time it is needed and
  kept: an ordinary ``UsedIp`` (``usedFor`` = ``FlatDhcpServer``), so it is never handed to a VM, recorded as
  the inherent L3 tag ``flatNetwork::DhcpServer::<ip>::ipUuid::<usedIpUuid>``; the same address on every host.
* Check and allocation run in one write transaction, so concurrent callers get the same address.
* A tag whose UsedIp is gone (its range was deleted) is replaced by a fresh allocation.
"""

from __future__ import annotations

from typing import Any

from controller.core import Controller
from controller.resources import ipam

TAG = "flatNetwork::DhcpServer::"
USED_FOR = "FlatDhcpServer"

_CURRENT = ("SELECT t.uuid AS tagUuid, u.uuid, u.ip, u.netmask, u.gateway FROM SystemTag t LEFT JOIN UsedIp u "
            "ON t.tag = ? || u.ip || '::ipUuid::' || u.uuid WHERE t.resourceUuid=? AND t.tag LIKE ? "
            "ORDER BY t.createDate")


async def current_dhcp_ip(core: Controller, l3_uuid: str) -> dict[str, Any] | None:
    """The L3's DHCP server UsedIp (uuid, ip, netmask, gateway) if one is recorded and still allocated."""
    for r in await core.db.fetchall(_CURRENT, (TAG, l3_uuid, TAG + "%")):
        if r["uuid"] is not None:
            return dict(r)
    return None


async def ensure_dhcp_ip(core: Controller, l3_uuid: str) -> dict[str, Any]:
    """The L3's DHCP server IP, allocating and tagging it when there is none (409 when the L3 has no free IP)."""
    found = await current_dhcp_ip(core, l3_uuid)
    if found is not None:
        return found
    async with core.db.write() as tx:
        for r in await tx.fetchall(_CURRENT, (TAG, l3_uuid, TAG + "%")):
            if r["uuid"] is not None:
                return dict(r)
            await tx.execute("DELETE FROM SystemTag WHERE uuid=?", (r["tagUuid"],))  # its range was deleted
        used = await ipam.allocate(tx, l3_uuid, strategy="first", used_for=USED_FOR)
        await core.services["tags"].write(tx, "L3NetworkVO", l3_uuid, f"{TAG}{used['ip']}::ipUuid::{used['uuid']}",
                                          system=True, inherent=True)
    return {k: used[k] for k in ("uuid", "ip", "netmask", "gateway")}
