"""1.0's VM state machine (reference §2.1): transitions per event and the APIs each state allows."""

from __future__ import annotations

from controller.errors import ApiError, vm_state_error

INTERMEDIATE = frozenset({"Starting", "Stopping", "Rebooting", "Destroying", "Migrating"})

TRANSITIONS: dict[str, dict[str, str]] = {
    "Created": {"starting": "Starting", "destroying": "Destroying"},
    "Starting": {"running": "Running", "stopped": "Stopped", "destroying": "Destroying", "unknown": "Unknown"},
    "Running": {"running": "Running", "destroying": "Destroying", "stopping": "Stopping", "stopped": "Stopped",
                "rebooting": "Rebooting", "migrating": "Migrating", "unknown": "Unknown"},
    "Stopping": {"stopped": "Stopped", "destroying": "Destroying", "running": "Running", "unknown": "Unknown"},
    "Stopped": {"starting": "Starting", "stopped": "Stopped", "running": "Running", "destroying": "Destroying",
                "unknown": "Unknown"},
    "Migrating": {"migrated": "Running", "running": "Running", "stopped": "Stopped", "unknown": "Unknown",
                  "destroying": "Destroying"},
    "Rebooting": {"running": "Running", "stopped": "Stopped", "unknown": "Unknown", "destroying": "Destroying"},
    "Unknown": {"destroying": "Destroying", "stopping": "Stopping", "unknown": "Unknown", "running": "Running",
                "stopped": "Stopped"},
    "Destroying": {"unknown": "Unknown", "destroyed": "Destroyed", "destroying": "Destroying",
                   "running": "Running", "expunging": "Expunging"},
    "Destroyed": {"stopped": "Stopped"},
    "Expunging": {},
    "Error": {},
}

#: API → states that allow it (the table of §2.1 read per API).
ALLOWED: dict[str, list[str]] = {
    "StartVmInstance": ["Stopped"],
    "StopVmInstance": ["Running", "Stopped", "Unknown"],
    "RebootVmInstance": ["Running"],
    "DestroyVmInstance": ["Running", "Stopped", "Unknown", "Starting", "Migrating", "Stopping", "Rebooting",
                          "Created"],
    "GetVmConsoleAddress": ["Running"],
    "AttachIsoToVmInstance": ["Running", "Stopped"],
    "DetachIsoFromVmInstance": ["Running", "Stopped"],
    "RecoverVmInstance": ["Destroyed"],
    "ExpungeVmInstance": ["Destroyed"],
    "ChangeInstanceOffering": ["Running", "Stopped"],
    "AttachL3NetworkToVm": ["Running", "Stopped"],
    "DetachL3NetworkFromVm": ["Running", "Stopped"],
    "MigrateVm": ["Running"],
    "GetVmMigrationCandidateHosts": ["Running"],
}


def next_state(state: str, event: str) -> str:
    """The state after ``event``; any pair outside the table is an internal error (1.0)."""
    to = TRANSITIONS.get(state, {}).get(event)
    if to is None:
        raise ApiError(f"vm state machine: no transition from state[{state}] on event[{event}]")
    return to


def check_allowed(uuid: str, state: str, api: str) -> None:
    """Raise 409 VM.1010 when ``state`` does not allow ``api``."""
    allowed = ALLOWED[api]
    if state not in allowed:
        raise vm_state_error(uuid, state, api, allowed)
