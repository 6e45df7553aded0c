"""Imports every module that registers APIs or start-up hooks, in one visible list."""

from controller import (  # noqa: F401
    backup,
    compute,
    flatnet_provider,
    globalconfig,
    identity,
    secgroup,
)
from controller.api import queries  # noqa: F401
from controller.resources import (  # noqa: F401
    backup_storage,
    cluster,
    image,
    ip_range,
    l2,
    l3,
    network_service,
    offering,
    primary_storage,
    zone,
)
from controller.storage import migrate as storage_apis  # noqa: F401
from controller.tags import api as tag_api  # noqa: F401
