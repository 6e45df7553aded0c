"""``/vrouter/call``: relay to a virtual router's agent over its domain's virtio-serial channel;
``/vrouter/probeips``: is an address already used on a bridge's L2 (ARP probes, kvmagent.arpprobe)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import vrouter.contract as channel
from kvmagent import arpprobe
from kvmagent.context import AgentContext
from kvmagent.contract.base import AgentError
from kvmagent.contract.vrouter import (
    IpProbe,
    IpProbeResult,
    VRouterCallCmd,
    VRouterCallReply,
    VRouterProbeIpsCmd,
    VRouterProbeIpsReply,
)
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


@handles(VRouterProbeIpsCmd)
async def vrouter_probe_ips(ctx: AgentContext, cmd: VRouterProbeIpsCmd) -> VRouterProbeIpsReply:
    async def one(p: IpProbe) -> IpProbeResult:
        try:
            mac = await asyncio.to_thread(arpprobe.probe, p.bridgeName, str(p.ip), cmd.timeout)
        except FileNotFoundError:
            return IpProbeResult(bridgeName=p.bridgeName, ip=str(p.ip), probed=False)
        except OSError as e:
            raise AgentError("VROUTER.PROBE_FAILED", f"ARP probe of {p.ip} on {p.bridgeName} failed: {e}",
                             status=500) from None
        return IpProbeResult(bridgeName=p.bridgeName, ip=str(p.ip), probed=True, mac=mac)

    return VRouterProbeIpsReply(results=list(await asyncio.gather(*(one(p) for p in cmd.probes))))
