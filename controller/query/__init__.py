"""The controller's query engine: ZStack 1.0 ``Query<Resource>`` APIs compiled to indexed SQL.

Public API::

    await query(db, "VmInstance", QueryMsg(...))      -> {"success": True, "inventories": [...], ["total": N]}
    await get_inventory(db, "VmInstance", uuid)       -> dict | None
    await get_inventories(db, "VmInstance", [uuids])  -> list[dict]
    query_api_names()                                 -> {"QueryVmInstance": "VmInstance", ...}
    parse_query_msg(params: dict)                     -> QueryMsg (InvalidArgument on bad shape)
"""

from controller.query.inventory import get_inventories, get_inventory, query
from controller.query.models import Condition, QueryMsg, parse_query_msg
from controller.query.schema import RESOURCES, Resource, query_api_names

__all__ = ["RESOURCES", "Condition", "QueryMsg", "Resource", "get_inventories", "get_inventory",
           "parse_query_msg", "query", "query_api_names"]
