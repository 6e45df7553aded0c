"""The Flat network service provider, controller side (reference §3.2/§3.3, DESIGN.md "Flat network data plane").

* :mod:`.specs` reads the database and builds the agent's wire models (``kvmagent.contract.flatnet``):
  the L3 (bridge, DHCP server IP, netmask, gateway, DNS, domain, anti-spoofing) and each NIC's DhcpInfo.
* :mod:`.dhcpserver` keeps one DHCP server IP per L3 using Flat DHCP (an ordinary UsedIp + inherent tag).
* :mod:`.hooks` pushes DHCP and user data to the hosts from the compute extension points, the tracer, host
  (re)connect, tag changes and network-service changes.
"""

from controller.flatnet_provider import hooks  # noqa: F401
