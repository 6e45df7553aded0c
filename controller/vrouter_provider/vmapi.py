"""``ReconnectVirtualRouter vmInstanceUuid``: re-initialise the router's agent over its channel (a rebooted
router lost its token: it is given again), push the controller's agent code if the router runs other code
(1.0 redeployed its agents when their MD5 differed) and push the whole state; the event's inventory is the
router."""

from __future__ import annotations

from typing import Any

from controller.api.context import ApiContext
from controller.api.messages import ApiMessage, Uuid
from controller.api.registry import api
from controller.errors import ApiError, NotFound, StateConflict
from controller.vrouter_provider.router import AGENT_READY_TIMEOUT, connect_agent


class ReconnectVirtualRouterMsg(ApiMessage):
    vmInstanceUuid: Uuid


@api("ReconnectVirtualRouter", ReconnectVirtualRouterMsg, queue=lambda m: m.vmInstanceUuid)
async def reconnect_virtual_router(ctx: ApiContext, msg: ReconnectVirtualRouterMsg) -> dict[str, Any]:
    """Reconnect a virtual router: agent init over its channel, then the whole configuration pushed again."""
    row = await ctx.db.fetchone("SELECT v.*, a.agentToken, a.generation, a.status, a.managementNetworkUuid, "
                                "a.publicNetworkUuid, a.defaultRouteL3NetworkUuid, a.guestL3NetworkUuid "
                                "FROM ApplianceVm a JOIN VmInstance v ON v.uuid = a.uuid WHERE a.uuid=?",
                                (msg.vmInstanceUuid,))
    if row is None:
        raise NotFound(f"invalid field[vmInstanceUuid], resource[uuid:{msg.vmInstanceUuid}, "
                       "type:VirtualRouterVmVO] not found")
    vr = dict(row)
    if vr["state"] != "Running":
        raise StateConflict(f"virtual router[uuid:{vr['uuid']}] is in state {vr['state']}; only a Running virtual "
                            "router can be reconnected", code="VR.1000")

    async def run() -> None:
        async with ctx.db.write() as tx:
            await tx.execute("UPDATE ApplianceVm SET status='Connecting' WHERE uuid=?", (vr["uuid"],))
        try:
            await connect_agent(ctx.core, vr, timeout=AGENT_READY_TIMEOUT)
        except ApiError:
            async with ctx.db.write() as tx:
                await tx.execute("UPDATE ApplianceVm SET status='Disconnected' WHERE uuid=?", (vr["uuid"],))
            raise

    await ctx.core.queues.run(f"vr-l3-{vr['guestL3NetworkUuid']}", run)
    return {"inventory": await ctx.inventory("VirtualRouterVm", vr["uuid"])}
