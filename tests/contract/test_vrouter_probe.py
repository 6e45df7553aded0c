"""``/vrouter/probeips`` on a real in-process agent: ARP probes on an interface of this machine reach a
device holding the address in a network namespace this test creates (veth pair); a free address, an
unknown bridge and bad input are answered as such. Root only (raw socket, namespaces)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from agent_harness import Agent, running_agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a namespace and a raw socket)")

NS, OUTER, INNER = f"zsprobe{os.getpid() % 10000}", f"zsprb{os.getpid() % 10000}a", f"zsprb{os.getpid() % 10000}b"
HELD, FREE = "198.51.100.7", "198.51.100.8"


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture
def l2() -> Iterator[tuple[str, str]]:
    """OUTER (this namespace, no address) wired to INNER (namespace NS, holding HELD); (OUTER, INNER's MAC)."""
    _ip("netns", "add", NS)
    try:
        _ip("link", "add", OUTER, "type", "veth", "peer", "name", INNER)
        _ip("link", "set", INNER, "netns", NS)
        _ip("netns", "exec", NS, "ip", "addr", "add", f"{HELD}/24", "dev", INNER)
        _ip("netns", "exec", NS, "ip", "link", "set", INNER, "up")
        _ip("link", "set", OUTER, "up")
        mac = subprocess.run(["ip", "netns", "exec", NS, "cat", f"/sys/class/net/{INNER}/address"], check=True,
                             capture_output=True, text=True).stdout.strip()
        yield OUTER, mac
    finally:
        subprocess.run(["ip", "link", "del", OUTER], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    async with running_agent(tmp_path) as a:
        yield a


async def test_a_held_address_answers_and_a_free_one_does_not(agent: Agent, l2: tuple[str, str]) -> None:
    bridge, inner_mac = l2
    status, body = await agent.call("/vrouter/probeips", {"probes": [
        {"bridgeName": bridge, "ip": HELD}, {"bridgeName": bridge, "ip": FREE},
        {"bridgeName": "zsnosuchbr0", "ip": HELD}],
        "timeout": 1.5})
    assert status == 200, body
    assert body["results"] == [
        {"bridgeName": bridge, "ip": HELD, "probed": True, "mac": inner_mac},
        {"bridgeName": bridge, "ip": FREE, "probed": True, "mac": None},
        {"bridgeName": "zsnosuchbr0", "ip": HELD, "probed": False, "mac": None}]


async def test_bad_input_is_refused_naming_the_field(agent: Agent) -> None:
    for body, field in (({"probes": [{"bridgeName": "br0; reboot", "ip": HELD}]}, "bridgeName"),
                        ({"probes": [{"bridgeName": "br0", "ip": "198.51.100.300"}]}, "ip"),
                        ({"probes": [], "timeout": 60}, "timeout")):
        status, reply = await agent.call("/vrouter/probeips", body)
        assert status == 400 and field in str(reply), (body, status, reply)
