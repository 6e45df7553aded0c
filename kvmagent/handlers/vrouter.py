"""``/vrouter/call``: relay to a virtual router's agent over its domain's virtio-serial channel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import vrouter.contract as channel
from kvmagent.context import AgentContext
from kvmagent.contract.base import AgentError
from kvmagent.contract.vrouter import VRouterCallCmd, VRouterCallReply
from kvmagent.driver.xml.channel import channel_socket
from kvmagent.routing import handles


@handles(VRouterCallCmd)
async def vrouter_call(ctx: AgentContext, cmd: VRouterCallCmd) -> VRouterCallReply:
    state_dir = getattr(ctx.driver, "state_dir", None)
    if state_dir is None:
        raise AgentError("VROUTER.UNSUPPORTED", "this host's driver runs no QEMU domains (no router channel)",
                         status=409)
    sock = str(channel_socket(Path(state_dir), cmd.vmUuid))
    try:
        if cmd.waitReady and cmd.path == "/init":
            body = await asyncio.to_thread(channel.wait_ready, sock, str(cmd.body.get("uuid", cmd.vmUuid)),
                                           cmd.token, cmd.timeout)
            return VRouterCallReply(status=200, body=body)
        status, body = await asyncio.to_thread(channel.call, sock, cmd.path, cmd.body, cmd.token, cmd.timeout)
    except channel.ChannelError as e:
        raise AgentError("VROUTER.UNREACHABLE", str(e), status=503) from None
    return VRouterCallReply(status=status, body=body)
