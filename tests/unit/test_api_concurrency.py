"""200 concurrent API calls mixing creates and conflicting operations on the same resources.

Expected: no lost write, no "database is locked", every reply a success or a clean 4xx, and exactly the
rows the successful calls account for.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from test_api_support import _core, l2, l3, provider, zone


async def test_200_concurrent_calls(api: Any) -> None:
    z = await zone(api)
    l2n = await l2(api, z["uuid"])
    ranges_l3, services_l3 = (await l3(api, l2n["uuid"], name="a"))["uuid"], (await l3(api, l2n["uuid"]))["uuid"]
    flat = (await provider(api, "Flat"))["uuid"]
    calls: list[tuple[str, str, dict[str, Any]]] = []
    for j in range(25):  # 25 distinct ranges, each submitted twice: the second of each pair overlaps
        for _ in range(2):
            calls.append(("range", "AddIpRange", {
                "l3NetworkUuid": ranges_l3, "name": f"r{j}", "startIp": f"10.0.{j}.10", "endIp": f"10.0.{j}.20",
                "netmask": "255.255.0.0", "gateway": "10.0.255.1"}))
    calls += [("cluster", "CreateCluster", {"zoneUuid": z["uuid"], "name": f"c{i}", "hypervisorType": "KVM"})
              for i in range(50)]
    services = {"l3NetworkUuid": services_l3, "networkServices": {flat: ["DHCP"]}}
    calls += [("svc+", "AttachNetworkServiceToL3Network", services) for _ in range(25)]
    calls += [("svc-", "DetachNetworkServiceFromL3Network", services) for _ in range(25)]
    calls += [("offering", "CreateInstanceOffering", {"name": f"o{i}", "cpuNum": 1, "cpuSpeed": 1,
                                                      "memorySize": 1 << 20}) for i in range(25)]
    calls += [("dns", "AddDnsToL3Network", {"l3NetworkUuid": ranges_l3, "dns": f"9.9.9.{i % 5}"})
              for i in range(25)]
    assert len(calls) == 200
    random.Random(3).shuffle(calls)

    replies = await asyncio.gather(*(api.raw(name, **params) for _, name, params in calls))
    outcome: Counter[tuple[str, int]] = Counter()
    for (kind, _, _), (status, body) in zip(calls, replies, strict=True):
        assert status in (200, 400, 409), (kind, status, body)
        assert "locked" not in str(body)
        assert body["success"] is (status == 200)
        outcome[(kind, status)] += 1

    assert outcome[("range", 200)] == 25 and outcome[("range", 400)] == 25
    assert outcome[("cluster", 200)] == 50 and outcome[("offering", 200)] == 25
    assert outcome[("dns", 200)] == 5 and outcome[("dns", 409)] == 20
    attached = outcome[("svc+", 200)] - outcome[("svc-", 200)]
    assert attached in (0, 1) and outcome[("svc+", 409)] + outcome[("svc+", 200)] == 25
    assert outcome[("svc-", 400)] + outcome[("svc-", 200)] == 25

    db = _core(api).db

    async def count(sql: str, *args: Any) -> int:
        row = await db.fetchone(sql, args)
        return int(row[0])

    assert await count("SELECT COUNT(*) FROM IpRange WHERE l3NetworkUuid=?", ranges_l3) == 25
    assert await count("SELECT COUNT(DISTINCT name) FROM IpRange") == 25
    assert await count("SELECT COUNT(*) FROM Cluster") == 50
    assert await count("SELECT COUNT(*) FROM InstanceOffering") == 25
    assert await count("SELECT COUNT(DISTINCT position) FROM L3NetworkDns WHERE l3NetworkUuid=?", ranges_l3) == 5
    assert await count("SELECT COUNT(*) FROM NetworkServiceL3NetworkRef WHERE l3NetworkUuid=?", services_l3) == attached
