"""HA-lite (beyond ZStack 1.0, off by default): start again the VMs a host lost.

When global config ``ha/restartLostVms`` is true, a VM that a host's full state sync finds stopped while the
controller had it Running (or Unknown: its host was Disconnected) — its host rebooted or crashed — is started
again through the StartVmInstance path (on its last host, where its root disk lives) once that host is
Connected. Stops through the API and guest power-offs (reported as events, not found by a sync) are never
undone. With the setting false (the default), such VMs stay Stopped, as in 1.0.
"""

from __future__ import annotations

import asyncio
import logging

from controller.api.context import ApiContext
from controller.api.messages import UuidMessage
from controller.compute import extensions
from controller.core import Controller
from controller.errors import ApiError
from controller.globalconfig import ConfigDef, register_config

log = logging.getLogger(__name__)

CONFIG = register_config(ConfigDef(
    "ha", "restartLostVms", "false", bool,
    description="HA-lite (beyond 1.0): start again a VM that its host lost (host reboot or crash, found by the "
                "host's state sync); API stops and guest power-offs are never undone."))
HOST_WAIT = 120.0


async def _lost(core: Controller, *, vm_uuid: str, host_uuid: str) -> None:
    if not core.services["configs"].get_bool(CONFIG.category, CONFIG.name):
        return
    log.info("vm %s was lost by host %s; HA-lite starts it again once the host is Connected", vm_uuid, host_uuid)
    core.tasks.start(f"ha-restart:{vm_uuid}", lambda: _restart(core, vm_uuid, host_uuid), restart=False)


async def _restart(core: Controller, vm_uuid: str, host_uuid: str) -> None:
    from controller.compute.vms import start_vm_instance

    loop = asyncio.get_running_loop()
    deadline = loop.time() + HOST_WAIT
    while True:
        host = await core.db.fetchone("SELECT status FROM Host WHERE uuid=?", (host_uuid,))
        if host is not None and host["status"] == "Connected":
            break
        if host is None or loop.time() > deadline:
            log.warning("HA-lite: host %s of lost vm %s is not Connected within %.0f s; the VM stays Stopped",
                        host_uuid, vm_uuid, HOST_WAIT)
            return
        await asyncio.sleep(0.5)
    vm = await core.db.fetchone("SELECT state FROM VmInstance WHERE uuid=?", (vm_uuid,))
    if vm is None or vm["state"] != "Stopped":
        return  # someone started or destroyed it meanwhile
    ctx = ApiContext(core, "StartVmInstance")
    try:
        await core.queues.run(vm_uuid, lambda: start_vm_instance(ctx, UuidMessage(uuid=vm_uuid)))
        log.info("HA-lite: vm %s started again", vm_uuid)
    except ApiError as e:
        log.warning("HA-lite: starting lost vm %s failed: %s", vm_uuid, e.details)


extensions.register("vm.lost", _lost)
