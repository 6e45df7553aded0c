"""``extensions.register_many``: one call registers a network service's hooks with the points they name."""

from __future__ import annotations

from typing import Any

import pytest

from controller.compute import extensions


async def _a(core: Any, **kw: Any) -> None:
    core.append(("a", kw))


async def _b(core: Any, **kw: Any) -> None:
    core.append(("b", kw))


async def test_keywords_name_the_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extensions, "HOOKS", {})
    extensions.register_many(vm_nic_attached=_a, host_connected=_b, vm_before_start=_a)
    assert extensions.HOOKS == {"vm.nic_attached": [_a], "host.connected": [_b], "vm.before_start": [_a]}
    seen: list[Any] = []
    await extensions.run("host.connected", seen, host={"uuid": "h"})
    assert seen == [("b", {"host": {"uuid": "h"}})]


def test_an_unknown_point_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extensions, "HOOKS", {})
    with pytest.raises(ValueError, match=r"vm\.started"):
        extensions.register_many(vm_started=_a)


def test_the_network_services_register_through_it() -> None:
    import controller.services  # noqa: F401  (registers every hook)

    names = {name: [f"{f.__module__}.{f.__name__}" for f in fns] for name, fns in extensions.HOOKS.items()}
    for point in ("vm.before_start", "vm.start_failed", "vm.stopped", "vm.state_changed", "host.connected"):
        assert any(n.startswith("controller.flatnet_provider.hooks.") for n in names[point]), point
        assert any(n.startswith("controller.secgroup.hooks.") for n in names[point]), point
