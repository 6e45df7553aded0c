"""Checks shared by the resource APIs: rows that must exist inside a transaction, IPv4 parsing, names.

Every check raises the controller's errors with 1.0-style texts that name the field and the value:
a missing row is 404 SYS.1003 ``invalid field[X], resource[uuid:..., type:...VO] not found``, a bad
value is 400 SYS.1007.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from controller.db.database import Tx
from controller.errors import InvalidArgument, NotFound

#: Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', ':' or blanks.
_IFNAME = re.compile(r"[A-Za-z0-9_.\-]{1,15}")


async def require(tx: Tx, table: str, uuid: str, field: str, *, vo: str | None = None) -> dict[str, Any]:
    """The row of ``table`` with ``uuid`` read inside ``tx``, or 404 SYS.1003 naming ``field``.

    Reading inside the caller's write transaction guarantees the row still exists when the caller's
    inserts run (no foreign-key failure turning into a 500)."""
    row = await tx.fetchone(f"SELECT * FROM {table} WHERE uuid = ?", (uuid,))
    if row is None:
        raise NotFound(f"invalid field[{field}], resource[uuid:{uuid}, type:{vo or table + 'VO'}] not found")
    return dict(row)


def ipv4(value: str, field: str) -> int:
    """``value`` as an integer IPv4 address, or 400 naming the field."""
    try:
        return int(ipaddress.IPv4Address(value))
    except ValueError:
        raise InvalidArgument(f"{field}[{value}] is not a IPv4 address") from None


def ip_str(n: int) -> str:
    return str(ipaddress.IPv4Address(n))


def netmask(value: str, field: str = "netmask") -> int:
    """The prefix length of a dotted IPv4 netmask (contiguous ones, not 0.0.0.0), or 400."""
    n = ipv4(value, field)
    inverted = ~n & 0xFFFFFFFF
    if n == 0 or inverted & (inverted + 1):
        raise InvalidArgument(f"{field}[{value}] is not a netmask, and the IP range netmask cannot be 0.0.0.0")
    return 32 - inverted.bit_length()


def interface_name(value: str, field: str) -> str:
    if not _IFNAME.fullmatch(value):
        raise InvalidArgument(f"{field}[{value}] is not a valid Linux interface name (1-15 characters among "
                              "letters, digits, '_', '.', '-')")
    return value
