"""Host endpoints: connect, ping, facts, capacity, bridge check."""

from __future__ import annotations

from kvmagent.context import AgentContext
from kvmagent.contract.base import AgentError
from kvmagent.contract.host import (
    CapacityCmd,
    CapacityReply,
    CheckBridgeCmd,
    CheckBridgeReply,
    ConnectCmd,
    ConnectReply,
    FactsCmd,
    HostFactsReply,
    PingCmd,
    PingReply,
)
from kvmagent.contract.version import PROTOCOL_LEVEL, RELEASE
from kvmagent.digest import installed_digest
from kvmagent.routing import handles


async def _facts(ctx: AgentContext) -> dict[str, object]:
    f = await ctx.driver.host_facts()
    return {"cpuNum": f.cpu_num, "cpuSpeed": f.cpu_mhz, "cpuModel": f.cpu_model,
            "totalMemory": f.memory_bytes,
            "libvirtVersion": f.libvirt_version, "qemuVersion": f.qemu_version, "hvmCpuFlag": f.hvm_flag,
            "domainType": f.domain_type, "hypervisor": f.hypervisor, "liveSnapshot": f.live_snapshot,
            "agentVersion": RELEASE, "agentProtocol": PROTOCOL_LEVEL, "agentDigest": installed_digest()}


@handles(ConnectCmd)
async def connect(ctx: AgentContext, cmd: ConnectCmd) -> ConnectReply:
    """Point event reports at ``controllerUrl``; the host uuid must be the one this agent serves."""
    if cmd.hostUuid != ctx.config.host_uuid:
        raise AgentError("HOST.UUID_MISMATCH", f"this agent serves host {ctx.config.host_uuid}, "
                         f"not hostUuid={cmd.hostUuid!r}; reinstall the agent for that host", status=409)
    ctx.events.controller_url = cmd.controllerUrl.rstrip("/")
    return ConnectReply(hostUuid=ctx.config.host_uuid, bootId=ctx.boot_id, **await _facts(ctx))  # type: ignore[arg-type]


@handles(PingCmd)
async def ping(ctx: AgentContext, cmd: PingCmd) -> PingReply:
    return PingReply(hostUuid=ctx.config.host_uuid, bootId=ctx.boot_id, ready=ctx.ready)


@handles(FactsCmd)
async def facts(ctx: AgentContext, cmd: FactsCmd) -> HostFactsReply:
    return HostFactsReply(**await _facts(ctx))  # type: ignore[arg-type]


@handles(CapacityCmd)
async def capacity(ctx: AgentContext, cmd: CapacityCmd) -> CapacityReply:
    c = await ctx.driver.capacity()
    return CapacityReply(cpuNum=c.cpu_num, cpuSpeed=c.cpu_speed_mhz, usedCpu=c.used_cpu,
                         totalMemory=c.total_memory_bytes, usedMemory=c.used_memory_bytes)


@handles(CheckBridgeCmd)
async def check_bridge(ctx: AgentContext, cmd: CheckBridgeCmd) -> CheckBridgeReply:
    if not await ctx.driver.bridge_exists(cmd.bridgeName):
        raise AgentError("NET.BRIDGE_NOT_FOUND", f"bridge {cmd.bridgeName!r} does not exist on host "
                         f"{ctx.config.host_uuid}; create it or fix the L2 network's physical interface",
                         status=404, details={"bridgeName": cmd.bridgeName})
    return CheckBridgeReply(bridgeName=cmd.bridgeName, exists=True)
