"""The VirtualRouter network service provider, controller side (reference virtual-router.md, DESIGN.md
"Virtual router").

* :mod:`.offering`: CreateVirtualRouterOffering / UpdateVirtualRouterOffering (QueryVirtualRouterOffering is
  generic; DeleteInstanceOffering deletes one), 1.0's rules; offering choice for a guest L3.
* :mod:`.router`: one router VM per guest L3, created and started on demand (NICs with 1.0's roles, the
  gateway rule), its agent reached through the host agent's ``/vrouter/call`` relay, the whole desired state
  pushed with a generation number.
* :mod:`.eip`: CreateVip / DeleteVip, CreateEip / AttachEip / DetachEip / DeleteEip (queries are generic).
* :mod:`.portforward`: CreatePortForwardingRule / Attach / Detach / Delete / ChangeState / Update,
  GetPortForwardingAttachableVmNics (:mod:`.vips` holds what EIP and port forwarding share).
* :mod:`.vmapi`: ReconnectVirtualRouter.
* :mod:`.hooks`: compute's extension points: a user VM starting on an L3 with VirtualRouter services gets its
  router first; VM stops, state changes and NIC changes push the router the whole state again.
* :mod:`.health`: the periodic health check (``virtualRouter/ping.interval``): reconnect, re-create, push the
  controller's agent code to a router running other code.
* :mod:`.recovery`: at controller start, every router is checked once right after crash recovery (a change
  committed but never pushed reaches it; a router left half connected is reconnected).
"""

from controller.vrouter_provider import eip, health, hooks, offering, portforward, recovery, vmapi  # noqa: F401
