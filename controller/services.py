"""Imports every module that registers APIs or start-up hooks, in one visible list."""

# First: storage's extension hooks run before the others, as when controller.storage registered them itself.
from controller import storage_hooks  # noqa: F401

# isort: split

from controller import (  # noqa: F401
    account,
    backup,
    compute,
    consistency,
    flatnet_provider,
    globalconfig,
    housekeeping,
    identity,
    sealed,
    secgroup,
    tls,
    vrouter_provider,
)
from controller.api import queries  # noqa: F401
from controller.backup import templates  # noqa: F401
from controller.backup import update as backup_update  # noqa: F401
from controller.compute import agent_upgrade, host_update, nics, resize  # noqa: F401
from controller.resources import (  # noqa: F401
    backup_storage,
    capacity_api,
    cluster,
    image,
    ip_range,
    l2,
    l3,
    network_service,
    offering,
    primary_storage,
    shared_storage,
    types_api,
    zone,
)
from controller.storage import from_template, volume_apis  # noqa: F401
from controller.storage import migrate as storage_apis  # noqa: F401
from controller.storage import reconnect as ps_reconnect  # noqa: F401
from controller.tags import api as tag_api  # noqa: F401
