"""The virtual router appliance's agent (runs inside the router image built by scripts/build-vr-image).

Standard library only: the same code renders configuration in unit tests and on a host, and runs in the
appliance under the image's pruned Python. ``VERSION`` is stamped into the image (/etc/vrouter-release).
"""

from vrouter.contract import CHANNEL_NAME

VERSION = "0.1.0"

__all__ = ["CHANNEL_NAME", "VERSION"]
