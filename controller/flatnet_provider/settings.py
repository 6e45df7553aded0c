"""Settings the flat provider adds: the ``flatNetwork/antiSpoofing`` global config and the per-L3 override tag.

* Global config ``flatNetwork`` / ``antiSpoofing`` (default ``true``): per-VM ebtables rules on each tap so a
  VM can only send from its own MAC and IP and cannot answer DHCP.
* L3 system tag ``flatNetwork::antiSpoofing::true|false`` overrides it for one L3 network (e.g. an L3 whose
  VMs route other addresses). Both take effect at the next apply on a host (VM start, host reconnect).
"""

from __future__ import annotations

from controller.errors import InvalidArgument
from controller.globalconfig import ConfigDef, register_config
from controller.tags import service as tag_service
from controller.tags.patterns import TagPattern

CONFIG = ConfigDef("flatNetwork", "antiSpoofing", "true", bool, description=(
    "Anti-spoofing on the taps of VMs on Flat-DHCP L3 networks: a VM may send only from its own MAC and IP "
    "and cannot answer DHCP. Override per L3 network with the system tag flatNetwork::antiSpoofing::false."))
PATTERN = TagPattern("flatNetwork::antiSpoofing::{enabled}", ("L3NetworkVO",))


async def _check_anti_spoofing(tags: tag_service.Tags, l3_uuid: str | None, v: dict[str, str]) -> None:
    if v["enabled"] not in ("true", "false"):
        raise InvalidArgument(f"flatNetwork::antiSpoofing takes true or false, but actual is {v['enabled']!r}")


def register() -> None:
    """Add the config, the tag pattern and its validator (idempotent)."""
    register_config(CONFIG)
    tag_service.register_pattern(PATTERN, _check_anti_spoofing)
