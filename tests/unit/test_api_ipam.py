"""The IP allocator (controller.resources.ipam) on a real controller database."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from test_api_support import _core, ip_range, l2, l3, zone

from controller.errors import InvalidArgument, OperationError
from controller.resources import ipam


async def _l3(api: Any) -> str:
    z = await zone(api)
    return (await l3(api, (await l2(api, z["uuid"]))["uuid"]))["uuid"]


async def _alloc(api: Any, l3_uuid: str, **kw: Any) -> dict[str, Any]:
    async with _core(api).db.write() as tx:
        return await ipam.allocate(tx, l3_uuid, **kw)


async def test_first_fills_in_order_reuses_gaps_and_reports_exhaustion(api: Any) -> None:
    u = await _l3(api)
    with pytest.raises(OperationError, match="has no IP range"):
        await _alloc(api, u)
    await ip_range(api, u, "10.0.0.10", "10.0.0.14", "255.255.255.0", "10.0.0.1")
    await ip_range(api, u, "10.0.0.100", "10.0.0.101", "255.255.255.0", "10.0.0.1", name="r2")
    got = [await _alloc(api, u, strategy="first", used_for="VmNic") for _ in range(7)]
    assert [g["ip"] for g in got] == ["10.0.0.10", "10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14",
                                      "10.0.0.100", "10.0.0.101"]
    assert (got[0]["gateway"], got[0]["netmask"], got[0]["usedFor"]) == ("10.0.0.1", "255.255.255.0", "VmNic")
    with pytest.raises(OperationError, match="cannot find available ip"):
        await _alloc(api, u, strategy="first")
    async with _core(api).db.write() as tx:
        assert await ipam.release(tx, got[2]["uuid"]) is True
        assert await ipam.release(tx, got[2]["uuid"]) is False
    assert (await _alloc(api, u, strategy="first"))["ip"] == "10.0.0.12"


async def test_random_hands_out_every_address_once(api: Any) -> None:
    u = await _l3(api)
    await ip_range(api, u, "10.0.0.10", "10.0.0.29", "255.255.255.0", "10.0.0.1")
    await ip_range(api, u, "10.0.0.50", "10.0.0.59", "255.255.255.0", "10.0.0.1", name="r2")
    rng = random.Random(7)
    ips = [(await _alloc(api, u, rng=rng))["ip"] for _ in range(30)]
    assert len(set(ips)) == 30
    assert ips[:5] != sorted(ips[:5]) or ips[:5][0] != "10.0.0.10"  # not simply the first-free order
    with pytest.raises(OperationError):
        await _alloc(api, u, rng=rng)


async def test_static_ip_and_rollback(api: Any) -> None:
    u = await _l3(api)
    await ip_range(api, u, "10.0.0.10", "10.0.0.20", "255.255.255.0", "10.0.0.1")
    db = _core(api).db
    async with db.write() as tx:
        row = await ipam.allocate_ip(tx, u, "10.0.0.15")
    assert row["ip"] == "10.0.0.15"
    async with db.write() as tx:
        with pytest.raises(OperationError, match="already used"):
            await ipam.allocate_ip(tx, u, "10.0.0.15")
        with pytest.raises(InvalidArgument, match=r"staticIp\[10.0.0.30\] is not inside"):
            await ipam.allocate_ip(tx, u, "10.0.0.30")
        with pytest.raises(InvalidArgument, match="IPv4"):
            await ipam.allocate_ip(tx, u, "10.0.0")
    with pytest.raises(RuntimeError):
        async with db.write() as tx:
            await ipam.allocate(tx, u, strategy="first")
            raise RuntimeError("the caller failed after allocating")
    assert [r["ip"] for r in await api.query("QueryUsedIp")] == ["10.0.0.15"]  # rolled back with the caller


async def test_concurrent_allocations_are_distinct(api: Any) -> None:
    u = await _l3(api)
    await ip_range(api, u, "10.0.0.10", "10.0.0.109", "255.255.255.0", "10.0.0.1")
    rows = await asyncio.gather(*(_alloc(api, u, strategy=("first" if i % 2 else "random")) for i in range(100)))
    assert len({r["ip"] for r in rows}) == 100


async def test_large_range_is_not_scanned(api: Any) -> None:
    """A /8 (16.7M addresses): allocation and GetFreeIp only look at used addresses."""
    u = await _l3(api)
    await ip_range(api, u, "10.0.0.2", "10.255.255.254", "255.0.0.0", "10.0.0.1")
    ips = [(await _alloc(api, u, strategy="first"))["ip"] for _ in range(300)]
    assert ips[-1] == "10.0.1.45"
    free = (await api.call("GetFreeIp", l3NetworkUuid=u, limit=2))["inventories"]
    assert [f["ip"] for f in free] == ["10.0.1.46", "10.0.1.47"]
    assert len({(await _alloc(api, u))["ip"] for _ in range(50)} | set(ips)) == 350
