"""Compute: hosts (AddKvmHost, connect, ping), the agent client, VMs (lifecycle, allocation, state sync).

Importing this package registers its APIs and start-up hooks (see ``controller/services.py``).
"""

from controller.compute import agents, deletion, ha, hosts, images, iso, ping, vms  # noqa: F401
