"""The release and the agent protocol level, shared by the controller and the agent.

``RELEASE`` is the ZStack-Py release (``controller.version.VERSION`` and pyproject's version are this).
``PROTOCOL_LEVEL`` is raised whenever a change of the agent contract needs the agent to be upgraded with the
controller. The controller accepts an agent one level behind (the host connects, flagged
``agentUpgradeNeeded``) and refuses one two or more levels behind or newer than itself. An agent that does
not report a level (before 0.2.0) is level 0.

Levels: 1 — release 0.2.0; 2 — live migration (``/vm/migrate/prepare``, ``/vm/migrate``, ``/vm/migrate/done``,
``/vm/migrate/progress``): the controller refuses MigrateVm from or to a host whose agent is below
:data:`MIGRATION_LEVEL` (naming the host and both levels) instead of failing half-way on a missing endpoint.
"""

RELEASE = "0.2.0"
PROTOCOL_LEVEL = 2
#: The lowest agent protocol level that serves the live-migration endpoints.
MIGRATION_LEVEL = 2
