"""The virtual router appliance's agent (runs inside the router image built by scripts/build-vr-image).

Standard library only: the same code renders configuration in unit tests and on a host, and runs in the
appliance under the image's pruned Python. ``VERSION`` is stamped into the image (/etc/vrouter-release).
"""

VERSION = "0.1.0"
#: the virtio-serial port name the agent listens on (libvirt ``<target type='virtio' name=...>``)
CHANNEL_NAME = "org.zstack.vrouter.0"
