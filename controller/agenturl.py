"""Where a host's agent answers (its own module: ``controller.storage`` needs it and must not import compute)."""

from __future__ import annotations

from typing import Any


def agent_url(host: dict[str, Any]) -> str:
    """The agent's base URL: https when the host's agent was deployed with TLS."""
    ip = str(host["managementIp"])
    hostpart = f"[{ip}]" if ":" in ip else ip
    return f"{'https' if host.get('agentTls') else 'http'}://{hostpart}:{host['agentPort']}"
