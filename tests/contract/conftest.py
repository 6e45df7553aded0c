"""Contract-tier fixtures: ``env`` (an in-process controller with two in-process agents over the libvirt test
driver and real StorageService/qemu-img) is defined in ``test_controller_compute.py`` and shared here."""

from test_controller_compute import env  # noqa: F401
