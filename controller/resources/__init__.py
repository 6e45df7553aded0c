"""Resource services and their APIs, one module per resource (zone, cluster, network, ...)."""
