"""The ZStack-Py controller: the thin management node.

It validates API calls, keeps the source of truth in SQLite, allocates hosts, IPs and capacity,
serialises work per resource and routes commands to the kvmagents. It never touches libvirt, netlink
or disk images itself; the only agent module it may import is the wire contract
(``kvmagent.contract``).
"""
