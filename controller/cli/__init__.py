"""``zstack-cli``: ZStack 1.0's command-line syntax over the ZStack-Py controller HTTP API.

Modules: ``parser`` (pure: line -> API call), ``schema`` (OpenAPI cache and 1.0 fallback tables),
``client`` (HTTP), ``session`` (CLI home, session file), ``app`` (running one command), ``shell``
(interactive loop), ``main`` (entry point).
"""
