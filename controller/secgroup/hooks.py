"""When hosts get pushed (reference §4.2), through compute's extension points as the flat provider does.

* ``vm.before_start``: the target host's set including the starting VM, BEFORE the domain starts: the tap
  matches its rules from its first packet (1.0 pushed after the domain was created, leaving a window). A
  failed push does not fail the start (1.0); the host is retried until current.
* ``vm.start_failed`` / ``vm.stopped``: that host's set without the VM (its rules disappear).
* ``vm.destroyed``: the VM's NICs leave every group (1.0's cascade; RecoverVmInstance does not restore
  them) and the hosts of those groups' members, and of groups naming them as remote group, are pushed.
* ``vm.state_changed`` (tracer, out of band): the old and the new host.
* ``host.connected``: the full set with ``force`` (1.0's refreshrulesonhost): rules exactly for the NICs
  the host runs, stale ones removed, whatever the agent kept. A host that was never pushed and runs no
  filtered NIC is left alone unless its agent still enforces a set of its own (pushed by another
  controller, or before the host was deleted and added again): that set is replaced by the empty one.
* Network services of an L3 changed (SecurityGroup service attached/detached): hosts with NICs on it.
* Global configs ``securityGroup/ingress.defaultPolicy``/``egress.defaultPolicy`` changed: every host
  with a filtered NIC.
* The supervised task ``secgroup-retry`` re-pushes hosts that are behind (:mod:`.push`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controller.api.context import ApiContext
from controller.compute import extensions
from controller.core import Controller, on_start
from controller.globalconfig import ConfigDef, register_config
from controller.resources.network_service import listen_services_changed
from controller.secgroup import rules as R
from controller.secgroup.push import Pusher
from kvmagent.contract.secgroup import SecurityGroupStatusCmd
from zsutil.tasks import every

log = logging.getLogger(__name__)

CONFIGS = (
    ConfigDef("securityGroup", "ingress.defaultPolicy", "deny", valid=("accept", "deny"), description=(
        "Ingress of a NIC in a security group when none of its groups has an ingress rule.")),
    ConfigDef("securityGroup", "egress.defaultPolicy", "accept", valid=("accept", "deny"), description=(
        "Egress of a NIC in a security group when none of its groups has an egress rule.")),
    ConfigDef("securityGroup", "host.failureWorkerInterval", "10", int, min=1, description=(
        "Seconds between two rounds of re-pushing rule sets to hosts that missed one (1.0: 60).")),
    ConfigDef("securityGroup", "host.failureResolvePerTime", "100", int, min=1, description=(
        "Hosts re-pushed per round at most.")),
)


def pusher(core: Controller) -> Pusher:
    return core.services["secgroup"]  # type: ignore[no-any-return]


async def _before_start(core: Controller, *, host: dict[str, Any], vm: dict[str, Any]) -> None:
    await pusher(core).changed([host["uuid"]], include_vm=vm["uuid"])


async def _start_failed(core: Controller, *, host: dict[str, Any], vm: dict[str, Any]) -> None:
    await pusher(core).changed([host["uuid"]], exclude_vm=vm["uuid"])


async def _stopped(core: Controller, *, host_uuid: str, vm: dict[str, Any]) -> None:
    await pusher(core).changed([host_uuid], exclude_vm=vm["uuid"])


async def _destroyed(core: Controller, *, vm: dict[str, Any]) -> None:
    groups = [r[0] for r in await core.db.fetchall("SELECT DISTINCT securityGroupUuid FROM VmNicSecurityGroupRef "
                                                   "WHERE vmInstanceUuid=?", (vm["uuid"],))]
    if not groups:
        return
    async with core.db.write() as tx:
        await tx.execute("DELETE FROM VmNicSecurityGroupRef WHERE vmInstanceUuid=?", (vm["uuid"],))
    await pusher(core).changed(await R.hosts_of_membership_change(core, groups))


async def _state_changed(core: Controller, *, vm_uuid: str, before: str, after: str, old_host: str | None,
                         new_host: str | None) -> None:
    await pusher(core).changed([h for h in (old_host, new_host) if h])


async def _host_connected(core: Controller, *, host: dict[str, Any]) -> None:
    known = await core.db.fetchone("SELECT 1 FROM SecurityGroupHostState WHERE hostUuid=?", (host["uuid"],))
    if known is None and not await R.host_nics(core, host["uuid"]) and not await _agent_keeps_a_set(core, host):
        return  # never told anything and nothing to filter: no push (hosts without the applier stay quiet)
    p = pusher(core)
    await p.bump([host["uuid"]])
    await p.push(host["uuid"], force=True)


async def _agent_keeps_a_set(core: Controller, host: dict[str, Any]) -> bool:
    """Whether the agent enforces a set this controller never pushed (another controller, or a database
    that lost the host's row: a host deleted and added again). Its agent would otherwise keep re-applying
    those rules to whatever NICs get the same tap names. An agent without the applier (or unreachable) says
    no: nothing to clear."""
    try:
        st = await core.services["agents"].call(host, SecurityGroupStatusCmd(), timeout=30)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.info("security groups: no status from host %s (%s); nothing to clear", host["uuid"], e)
        return False
    return st.generation is not None


async def _services_changed(ctx: ApiContext, l3_uuid: str) -> None:
    await pusher(ctx.core).changed(await R.hosts_of_l3(ctx.core, l3_uuid))


@on_start(45, "security-groups")
async def _bootstrap(core: Controller) -> None:
    p = Pusher(core)
    core.services["secgroup"] = p
    configs = core.services["configs"]

    async def on_policy(category: str, name: str, value: str) -> None:
        rows = await core.db.fetchall(
            "SELECT DISTINCT v.hostUuid FROM VmNicSecurityGroupRef m JOIN VmInstance v ON v.uuid = m.vmInstanceUuid "
            "WHERE v.hostUuid IS NOT NULL")
        await p.changed(r[0] for r in rows)

    for key in ("ingress.defaultPolicy", "egress.defaultPolicy"):
        configs.listen(("securityGroup", key), on_policy)

    def interval() -> float:
        return float(configs.get_int("securityGroup", "host.failureWorkerInterval"))

    core.tasks.start("secgroup-retry", lambda: every(interval, p.retry_round))


for _c in CONFIGS:
    register_config(_c)
extensions.register_many(vm_before_start=_before_start, vm_start_failed=_start_failed, vm_stopped=_stopped,
                         vm_destroyed=_destroyed, vm_state_changed=_state_changed, host_connected=_host_connected)
listen_services_changed(_services_changed)
