"""Controller side of local primary storage: capacity refs, data volumes, snapshots, volume migration."""

from controller.storage import deletion, migrate, snapshots, volumes  # noqa: F401
