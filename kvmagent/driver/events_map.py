"""libvirt lifecycle events → agent VM states (reference §3.9, plus Paused and Crashed)."""

from __future__ import annotations

import libvirt

from kvmagent.driver.base import VmState

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: VmState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: VmState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VmState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: VmState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VmState.RUNNING,  # "being shut down": still running
    libvirt.VIR_DOMAIN_SHUTOFF: VmState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: VmState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VmState.PAUSED,
}

#: States in which a domain has a live QEMU process.
ACTIVE = frozenset({libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED,
                    libvirt.VIR_DOMAIN_SHUTDOWN, libvirt.VIR_DOMAIN_PMSUSPENDED})

_STOPPED_DETAIL = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "failed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "from-snapshot",
}


def state_of(libvirt_state: int) -> VmState:
    return STATES.get(libvirt_state, VmState.UNKNOWN)


def event_state(event: int, detail: int) -> tuple[VmState | None, str]:
    """``(state, reason)`` for a lifecycle event; state None for events that change no run state."""
    if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
        return VmState.RUNNING, "wakeup" if detail == libvirt.VIR_DOMAIN_EVENT_STARTED_WAKEUP else "started"
    if event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
        return VmState.RUNNING, "resumed"
    if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
        return VmState.PAUSED, "suspended"
    if event == libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED:
        return VmState.PAUSED, "pm-suspended"
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        why = _STOPPED_DETAIL.get(detail, "stopped")
        return (VmState.CRASHED if why == "crashed" else VmState.STOPPED), why
    if event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
        return VmState.CRASHED, "crashed"
    names = {libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined", libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
             libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutting-down"}
    return None, names.get(event, f"event-{event}")
