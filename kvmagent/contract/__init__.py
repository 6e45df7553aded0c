"""The controller ↔ agent wire contract: one typed request/reply pair per agent endpoint.

This package is the only part of ``kvmagent`` the controller may import. Each request model names its
endpoint path (``PATH``) and its reply model (``Reply``), so a call site reads
``reply = await agent.call(host, StartVmCmd(...))`` and gets a ``StartVmReply`` back.

Modules: ``base`` (envelope and errors), ``host``, ``vm``, ``flatnet``, ``storage``, ``names`` (the tap name).
"""

from kvmagent.contract.base import AgentError, AgentReply, AgentRequest, ErrorBody

__all__ = ["AgentError", "AgentReply", "AgentRequest", "ErrorBody"]
