"""VM endpoints: start, stop, reboot, destroy, sync, state, console, ISO, data volumes and NICs."""

from __future__ import annotations

from kvmagent.context import AgentContext
from kvmagent.contract.base import AgentError, AgentReply
from kvmagent.contract.vm import (
    AttachIsoCmd,
    AttachNicCmd,
    AttachVolumeCmd,
    CheckVmStateCmd,
    ConsoleReply,
    DestroyVmCmd,
    DetachIsoCmd,
    DetachNicCmd,
    DetachVolumeCmd,
    GetConsoleCmd,
    RebootVmCmd,
    StartVmCmd,
    StopVmCmd,
    VmStateReply,
    VmStatesReply,
    VmSyncCmd,
    VolumeTO,
)
from kvmagent.driver.base import VmState
from kvmagent.driver.spec import DiskSpec, IsoSpec, NicSpec, VmSpec
from kvmagent.routing import handles


def _disk(v: VolumeTO) -> DiskSpec:
    return DiskSpec(path=v.path, volume_uuid=v.uuid, device_id=v.deviceId, format=v.format,
                    cache_mode=v.cacheMode)


def vm_spec(cmd: StartVmCmd) -> VmSpec:
    """The driver's spec for a start command (the wire contract stays out of the driver)."""
    return VmSpec(
        uuid=cmd.uuid, internal_id=cmd.internalId, name=cmd.name, cpu_num=cmd.cpuNum, cpu_speed=cmd.cpuSpeed,
        memory_bytes=cmd.memory, root_disk=_disk(cmd.rootVolume), management_ip=cmd.hostManagementIp,
        data_disks=tuple(_disk(v) for v in cmd.dataVolumes),
        nics=tuple(NicSpec(mac=n.mac.lower(), bridge=n.bridgeName, device_id=n.deviceId) for n in cmd.nics),
        boot_devs=tuple(cmd.bootDev),
        iso=IsoSpec(cmd.bootIso.path, cmd.bootIso.imageUuid) if cmd.bootIso else None,
        console_mode=cmd.consoleMode, console_password=cmd.consolePassword, cpu_mode=cmd.cpuMode, platform=cmd.platform,
        first_boot_from_cd=cmd.firstBootFromCd, appliance_channel=cmd.applianceChannel)


async def _state(ctx: AgentContext, uuid: str) -> VmStateReply:
    return VmStateReply(uuid=uuid, state=str(await ctx.driver.vm_state(uuid) or VmState.STOPPED))  # type: ignore[arg-type]


@handles(StartVmCmd)
async def start_vm(ctx: AgentContext, cmd: StartVmCmd) -> VmStateReply:
    await ctx.vms.start(vm_spec(cmd))
    return await _state(ctx, cmd.uuid)


@handles(StopVmCmd)
async def stop_vm(ctx: AgentContext, cmd: StopVmCmd) -> VmStateReply:
    await ctx.vms.stop(cmd.uuid, grace=cmd.timeout, force=cmd.force)
    return VmStateReply(uuid=cmd.uuid, state="Stopped")


@handles(RebootVmCmd)
async def reboot_vm(ctx: AgentContext, cmd: RebootVmCmd) -> VmStateReply:
    await ctx.vms.reboot(cmd.uuid, list(cmd.bootDev), grace=cmd.timeout)
    return await _state(ctx, cmd.uuid)


@handles(DestroyVmCmd)
async def destroy_vm(ctx: AgentContext, cmd: DestroyVmCmd) -> VmStateReply:
    await ctx.vms.destroy(cmd.uuid)
    return VmStateReply(uuid=cmd.uuid, state="Stopped")


@handles(VmSyncCmd)
async def vm_sync(ctx: AgentContext, cmd: VmSyncCmd) -> VmStatesReply:
    return VmStatesReply(states={u: str(s) for u, s in (await ctx.driver.list_vms()).items()})  # type: ignore[misc]


@handles(CheckVmStateCmd)
async def check_state(ctx: AgentContext, cmd: CheckVmStateCmd) -> VmStatesReply:
    states = await ctx.driver.list_vms()
    return VmStatesReply(states={u: str(states.get(u, VmState.STOPPED)) for u in cmd.vmUuids})  # type: ignore[misc]


@handles(GetConsoleCmd)
async def console(ctx: AgentContext, cmd: GetConsoleCmd) -> ConsoleReply:
    g = await ctx.driver.graphics(cmd.uuid)
    if g.port is None:
        raise AgentError("VM.NO_CONSOLE_PORT", f"VM {cmd.uuid} has {g.protocol} graphics but no port yet; "
                         "is it running?", status=409)
    return ConsoleReply(protocol=g.protocol, port=g.port, hostIp=g.listen or ctx.config.listen_ip,  # type: ignore[arg-type]
                        password=g.password)


@handles(AttachIsoCmd)
async def attach_iso(ctx: AgentContext, cmd: AttachIsoCmd) -> AgentReply:
    await ctx.driver.change_cdrom(cmd.uuid, IsoSpec(cmd.iso.path, cmd.iso.imageUuid))
    return AgentReply()


@handles(DetachIsoCmd)
async def detach_iso(ctx: AgentContext, cmd: DetachIsoCmd) -> AgentReply:
    await ctx.driver.change_cdrom(cmd.uuid, None)
    return AgentReply()


@handles(AttachVolumeCmd)
async def attach_volume(ctx: AgentContext, cmd: AttachVolumeCmd) -> AgentReply:
    await ctx.driver.attach_disk(cmd.uuid, _disk(cmd.volume))
    return AgentReply()


@handles(DetachVolumeCmd)
async def detach_volume(ctx: AgentContext, cmd: DetachVolumeCmd) -> AgentReply:
    await ctx.driver.detach_disk(cmd.uuid, cmd.volumeUuid)
    return AgentReply()


@handles(AttachNicCmd)
async def attach_nic(ctx: AgentContext, cmd: AttachNicCmd) -> AgentReply:
    n = cmd.nic
    await ctx.driver.attach_nic(cmd.uuid, NicSpec(mac=n.mac.lower(), bridge=n.bridgeName, device_id=n.deviceId),
                                cmd.internalId)
    return AgentReply()


@handles(DetachNicCmd)
async def detach_nic(ctx: AgentContext, cmd: DetachNicCmd) -> AgentReply:
    await ctx.driver.detach_nic(cmd.uuid, cmd.mac.lower(), timeout=cmd.timeout)
    return AgentReply()
