"""Flat network provider data plane: per host and per L3 a network namespace, dnsmasq for static DHCP,
and the metadata/user-data service. Used by the agent; imports neither controller nor kvmagent."""
