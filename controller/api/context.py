"""What an API handler gets: the controller core, the caller's session and helpers to load resources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.errors import NotFound

if TYPE_CHECKING:
    from controller.core import Controller
    from controller.identity import SessionInfo


@dataclass
class ApiContext:
    core: Controller
    api: str
    session: SessionInfo | None = None
    #: the session uuid the caller sent, even for APIs that need none (LogOut)
    raw_session: str | None = None
    #: the caller's address (login throttling, audit lines)
    source: str | None = None

    @property
    def db(self):  # type: ignore[no-untyped-def]
        return self.core.db

    async def require(self, table: str, uuid: str, field: str, *, vo: str | None = None) -> dict[str, Any]:
        """The row of ``table`` with ``uuid``, or 1.0's SYS.1003 naming the field."""
        row = await self.core.db.fetchone(f"SELECT * FROM {table} WHERE uuid = ?", (uuid,))
        if row is None:
            raise NotFound(f"invalid field[{field}], resource[uuid:{uuid}, type:{vo or table + 'VO'}] "
                           "not found")
        return dict(row)

    async def inventory(self, resource: str, key: Any) -> dict[str, Any]:
        from controller.query import get_inventory

        async with self.core.db.read() as conn:
            inv = await get_inventory(conn, resource, key)
        if inv is None:
            raise NotFound(f"{resource}[uuid:{key}] not found")
        return inv
