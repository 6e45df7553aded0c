"""Disk data plane: qemu-img through one subprocess runner, local primary storage, image cache,
volumes, snapshots and host-to-host volume copy. Used by the agent; imports neither controller nor
kvmagent."""
