"""Agent HTTP handlers, one module per area. The server imports every module listed here."""

MODULES = [
    "kvmagent.handlers.host",
    "kvmagent.handlers.vm",
    "kvmagent.handlers.flatnet",
    "kvmagent.handlers.storage",
    "kvmagent.handlers.sharedstorage",
    "kvmagent.handlers.secgroup",
    "kvmagent.handlers.migrate",
    "kvmagent.handlers.vrouter",
]
