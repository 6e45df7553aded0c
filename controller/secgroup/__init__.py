"""Security groups, controller side (reference security-groups.md; DESIGN.md "Security groups and migration").

* :mod:`.api`: the 1.0 APIs (groups, rules, L3 attachment, NIC membership, candidates); queries are generic
  (``controller/query/schema.py``: SecurityGroup, SecurityGroupRule, VmNicInSecurityGroup).
* :mod:`.rules`: database → the whole rule set of a host (``kvmagent.contract.secgroup``), and which hosts a
  change affects.
* :mod:`.push`: generations per host, pushes, the retry of hosts that are behind.
* :mod:`.hooks`: the compute extension points, host (re)connect, service and config changes.
"""

from controller.secgroup import api, hooks  # noqa: F401
