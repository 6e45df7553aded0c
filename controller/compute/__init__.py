"""Compute: hosts (AddKvmHost, connect, ping), the agent client, VMs (lifecycle, allocation, state sync).

Importing this package registers its APIs and start-up hooks (see ``controller/services.py``).
"""

from controller.compute import (  # noqa: F401
    agents,
    attach,
    deletion,
    ha,
    hosts,
    images,
    iso,
    maintenance,
    migrate,
    ping,
    recovery,
    shared_attach,
    vms,
)
