"""The aiohttp application keys of the agent, in a module that imports neither ``server`` nor ``lifecycle``,
so both (and the handlers) can read them without an import cycle."""

from __future__ import annotations

from aiohttp import web

from kvmagent.context import AgentContext
from zsutil.tasks import TaskGroup

CTX = web.AppKey("agent_ctx", AgentContext)
TASKS = web.AppKey("agent_tasks", TaskGroup)
