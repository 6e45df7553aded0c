"""Storage's reactions to compute's extension points, registered from outside both packages.

``controller.compute`` uses ``controller.storage`` (capacity, volumes, expunge); ``controller.storage`` must not
use ``controller.compute`` back (issue #18: the two packages imported each other through
``compute/extensions.py``). So storage only defines its hooks and this module, imported with every API module
by ``controller.services``, registers them:

* ``vm.destroyed`` → :func:`controller.storage.deletion.on_vm_destroyed` (detach, maybe delete, data volumes);
* ``host.connected`` → :func:`controller.storage.migrate.retry_leftovers` (copies a failed migration left).
"""

from __future__ import annotations

from controller.compute import extensions
from controller.storage import deletion, migrate

extensions.register("vm.destroyed", deletion.on_vm_destroyed)
extensions.register("host.connected", migrate.retry_leftovers)
