"""The hypervisor driver: interface (``base``) and the libvirt implementation (``libvirt_driver``).

Handlers never import libvirt; they get a :class:`~kvmagent.driver.base.HypervisorDriver` from the context.
"""

from kvmagent.driver.base import Capacity, DomainEvent, HostFacts, HypervisorDriver, VmState
from kvmagent.driver.spec import DiskSpec, IsoSpec, NicSpec, VmSpec

__all__ = ["Capacity", "DiskSpec", "DomainEvent", "HostFacts", "HypervisorDriver", "IsoSpec", "NicSpec",
           "VmSpec", "VmState"]
