"""Agent handlers of ``/securitygroup/*``: wire models → ``flatnet.secgroup`` models → ``ctx.secgroup``."""

from __future__ import annotations

import time
from typing import Any

from flatnet.secgroup import RuleSetError, SgNic, SgRule
from kvmagent.contract.base import AgentError
from kvmagent.contract.secgroup import (
    SecurityGroupApplyCmd,
    SecurityGroupApplyReply,
    SecurityGroupNicTO,
    SecurityGroupStatusCmd,
    SecurityGroupStatusReply,
)
from kvmagent.routing import handles
from zsutil.runner import ProcessError


def to_nic(x: SecurityGroupNicTO) -> SgNic:
    return SgNic(tap=x.internalName, mac=x.mac.lower(), ips=tuple(x.ips), uuid=x.vmNicUuid,
                 ingress_default=x.ingressDefaultPolicy, egress_default=x.egressDefaultPolicy,
                 host_service_ips=tuple(x.hostServiceIps), anti_spoofing=x.antiSpoofing,
                 rules=tuple(SgRule(r.type, r.protocol, r.startPort, r.endPort, tuple(r.addresses))
                             for r in x.rules))


def _service(ctx: Any) -> Any:
    svc = getattr(ctx, "secgroup", None)
    if svc is None:
        raise AgentError("NET.SECURITY_GROUP_UNAVAILABLE", "security groups are not enabled on this agent",
                         status=503)
    return svc


@handles(SecurityGroupApplyCmd)
async def apply(ctx: Any, cmd: SecurityGroupApplyCmd) -> SecurityGroupApplyReply:
    svc = _service(ctx)
    t0 = time.monotonic()
    try:
        applied, rendered = await svc.apply(cmd.generation, [to_nic(n) for n in cmd.nics], force=cmd.force)
    except RuleSetError as e:
        raise AgentError("NET.INVALID_ARGUMENT", str(e), status=400) from None
    except ProcessError as e:
        raise AgentError("NET.NFT_FAILED", f"nft refused the security-group rule set: {e.stderr.strip()[-500:]}",
                         status=500) from None
    return SecurityGroupApplyReply(generation=svc.generation, applied=applied, nicCount=len(cmd.nics),
                                   ruleCount=sum(rendered.rule_counts.values()),
                                   seconds=round(time.monotonic() - t0, 4))


@handles(SecurityGroupStatusCmd)
async def status(ctx: Any, cmd: SecurityGroupStatusCmd) -> SecurityGroupStatusReply:
    svc = _service(ctx)
    st = svc.status()
    in_sync = st["generation"] is not None and await svc.in_sync()
    return SecurityGroupStatusReply(generation=st["generation"], inSync=in_sync, nicCount=st["nicCount"],
                                    taps=st["taps"])
