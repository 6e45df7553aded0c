"""dnsmasq's log stays bounded (issue 18, security 9): no line per DHCP exchange, and rotation past a size."""

from __future__ import annotations

import asyncio

from flatnet_env import Env, flatnet_env_fixture  # noqa: F401  (fixture)


async def test_dhcp_exchanges_are_not_logged_and_the_log_is_rotated(env: Env) -> None:
    svc = env.service()
    await svc.start()
    l3 = env.l3()
    a = await env.add_vm("alpha")
    await svc.apply_dhcp([l3], [env.nic(a, l3, "10.77.0.11")], rebuild=False)
    assert await env.udhcpc(a) is not None
    log = svc._paths(l3.uuid).log
    text = log.read_text()
    assert "DHCPACK" not in text and "DHCPDISCOVER" not in text, text
    with log.open("a") as f:  # as if the log had grown for months
        f.write("x" * (2 << 20))
    assert svc.rotate_logs(max_bytes=1 << 20) == 1
    assert log.with_name("dnsmasq.log.1").stat().st_size > 2 << 20
    for _ in range(100):  # dnsmasq reopens its log on SIGUSR2
        if log.exists():
            break
        await asyncio.sleep(0.05)
    assert log.exists() and log.stat().st_size < 1 << 20
    assert svc.rotate_logs(max_bytes=1 << 20) == 0
    assert await env.udhcpc(a) is not None  # dnsmasq still serves
