"""Agent handlers of ``/flatnet/*``: map wire models to flatnet models and call ``ctx.flatnet`` (whose
errors are coded errors the server answers with their code and status)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flatnet.model import L3Spec, NicSpec, UserdataSpec
from kvmagent.contract.base import AgentError
from kvmagent.contract.flatnet import (
    FlatDhcpApplyCmd,
    FlatDhcpApplyReply,
    FlatDhcpPrepareCmd,
    FlatDhcpPrepareReply,
    FlatDhcpReleaseCmd,
    FlatDhcpReleaseReply,
    FlatL3,
    FlatL3Status,
    FlatNic,
    FlatNicEntry,
    FlatStatusCmd,
    FlatStatusReply,
    FlatUserdataApplyCmd,
    FlatUserdataApplyReply,
    FlatUserdataReleaseCmd,
    FlatUserdataReleaseReply,
)
from kvmagent.routing import handles


def _l3(x: FlatL3) -> L3Spec:
    return _model(L3Spec, dict(uuid=x.l3NetworkUuid, bridge=x.bridgeName, uplink=x.physicalInterface,
                               dhcp_ip=x.dhcpServerIp, netmask=x.netmask, gateway=x.gateway, dns=tuple(x.dns),
                               dns_domain=x.dnsDomain, anti_spoofing=x.antiSpoofing))


def _nic(x: FlatNic) -> NicSpec:
    return _model(NicSpec, dict(vm_uuid=x.vmUuid, l3_uuid=x.l3NetworkUuid, mac=x.mac, ip=x.ip,
                                netmask=x.netmask, gateway=x.gateway, hostname=x.hostname,
                                default_l3=x.isDefaultL3Network, tap=x.tapName))


def _model(cls: Any, data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        msgs = "; ".join(str(err.get("ctx", {}).get("error") or err["msg"]) for err in e.errors())
        raise AgentError("NET.INVALID_ARGUMENT", msgs, status=400) from None


@handles(FlatDhcpPrepareCmd)
async def prepare(ctx: Any, cmd: FlatDhcpPrepareCmd) -> FlatDhcpPrepareReply:
    await ctx.flatnet.prepare([_l3(x) for x in cmd.l3s])
    return FlatDhcpPrepareReply()


@handles(FlatDhcpApplyCmd)
async def apply(ctx: Any, cmd: FlatDhcpApplyCmd) -> FlatDhcpApplyReply:
    await ctx.flatnet.apply_dhcp([_l3(x) for x in cmd.l3s], [_nic(x) for x in cmd.nics], rebuild=cmd.rebuild)
    return FlatDhcpApplyReply()


@handles(FlatDhcpReleaseCmd)
async def release(ctx: Any, cmd: FlatDhcpReleaseCmd) -> FlatDhcpReleaseReply:
    await ctx.flatnet.release_dhcp([(n.l3NetworkUuid, n.mac) for n in cmd.nics])
    return FlatDhcpReleaseReply()


@handles(FlatUserdataApplyCmd)
async def userdata_apply(ctx: Any, cmd: FlatUserdataApplyCmd) -> FlatUserdataApplyReply:
    spec = _model(UserdataSpec, dict(
        vm_uuid=cmd.vmUuid, l3_uuid=cmd.l3NetworkUuid, vm_ip=cmd.vmIp, userdata=cmd.userdata,
        ssh_keys=tuple(cmd.sshKeys), root_password=cmd.rootPassword, hostname=cmd.hostname,
        instance_id=cmd.instanceId, service_offering=cmd.serviceOffering, availability_zone=cmd.availabilityZone,
        addresses=tuple(dict(l3_uuid=a.l3NetworkUuid, ip=a.ip) for a in cmd.addresses)))
    await ctx.flatnet.apply_userdata(spec)
    return FlatUserdataApplyReply()


@handles(FlatUserdataReleaseCmd)
async def userdata_release(ctx: Any, cmd: FlatUserdataReleaseCmd) -> FlatUserdataReleaseReply:
    await ctx.flatnet.release_userdata(cmd.vmUuid)
    return FlatUserdataReleaseReply()


@handles(FlatStatusCmd)
async def status(ctx: Any, cmd: FlatStatusCmd) -> FlatStatusReply:
    st = ctx.flatnet.status()
    return FlatStatusReply(l3s=[FlatL3Status(
        l3NetworkUuid=s.l3_uuid, namespace=s.netns, bridgeName=s.bridge, dhcpServerIp=s.dhcp_ip,
        dnsmasqPid=s.dnsmasq_pid, nicCount=s.nics, userdataCount=s.userdata,
        listening=[f"{ip}:{port}" for ip, port in s.listening], error=s.error,
        entries=[FlatNicEntry(vmUuid=v, mac=m, ip=i) for v, m, i in s.entries],
        userdataVms=s.userdata_vms) for s in st.l3s])
