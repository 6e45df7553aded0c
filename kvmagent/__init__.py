"""The ZStack-Py KVM agent: one asyncio server per host.

It owns the libvirt domain lifecycle (``kvmagent.driver``), turns libvirt events into state reports,
and hosts the flat network (``flatnet``) and storage (``storage``) data planes for its host.
"""
