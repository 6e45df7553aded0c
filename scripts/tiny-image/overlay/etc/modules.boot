# Kernel modules loaded by rcS before networking, in this order (dependencies first).
# The image builder copies exactly the modules named here and in modules.late, and checks their order.
virtio_ring
virtio
virtio_pci_legacy_dev
virtio_pci_modern_dev
virtio_pci
failover
net_failover
virtio_net
virtio_blk
button
evdev
