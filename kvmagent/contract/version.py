"""The release and the agent protocol level, shared by the controller and the agent.

``RELEASE`` is the ZStack-Py release (``controller.version.VERSION`` and pyproject's version are this).
``PROTOCOL_LEVEL`` is raised whenever a change of the agent contract needs the agent to be upgraded with the
controller. The controller accepts an agent one level behind (the host connects, flagged
``agentUpgradeNeeded``) and refuses one two or more levels behind or newer than itself. An agent that does
not report a level (before 0.2.0) is level 0.
"""

RELEASE = "0.2.0"
PROTOCOL_LEVEL = 1
