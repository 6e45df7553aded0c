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
* :mod:`.hooks`: compute's ``vm.before_start`` extension point: a user VM starting on an L3 with VirtualRouter
  services gets its router first.
"""

from controller.vrouter_provider import eip, hooks, offering, portforward, vmapi  # noqa: F401
