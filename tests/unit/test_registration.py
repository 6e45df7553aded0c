"""Public registration of global configs and system-tag patterns: idempotent, conflicts refused, the
registered validator really runs when a tag is validated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from controller import globalconfig
from controller.errors import InvalidArgument
from controller.tags import patterns, service
from controller.tags.patterns import TagPattern


@pytest.fixture(autouse=True)
def _restore_registries() -> Iterator[None]:
    configs, pats, validators = list(globalconfig.CONFIGS), list(patterns.PATTERNS), dict(service._VALIDATORS)
    yield
    globalconfig.CONFIGS[:] = configs
    patterns.PATTERNS[:] = pats
    service._VALIDATORS.clear()
    service._VALIDATORS.update(validators)


def test_register_config_is_idempotent_and_refuses_a_conflict() -> None:
    d = globalconfig.ConfigDef("testcat", "knob", "1", int, min=1)
    n = len(globalconfig.CONFIGS)
    assert globalconfig.register_config(d) is d
    assert globalconfig.register_config(globalconfig.ConfigDef("testcat", "knob", "1", int, min=1)) is d
    assert len(globalconfig.CONFIGS) == n + 1
    with pytest.raises(ValueError, match=r"testcat, name:knob\] is already registered"):
        globalconfig.register_config(globalconfig.ConfigDef("testcat", "knob", "2", int))
    assert globalconfig.CONFIGS[-1] is d


def test_register_config_refuses_to_redefine_a_builtin() -> None:
    with pytest.raises(ValueError, match="deletionPolicy"):
        globalconfig.register_config(globalconfig.ConfigDef("vm", "deletionPolicy", "Direct"))


async def _only_yes(tags: Any, uuid: str | None, v: dict[str, str]) -> None:
    if v["v"] != "yes":
        raise InvalidArgument(f"test::knob takes yes, but actual is {v['v']!r}")


async def _other(tags: Any, uuid: str | None, v: dict[str, str]) -> None:
    return None


async def test_register_pattern_idempotent_validator_runs() -> None:
    p = TagPattern("test::knob::{v}", ("L3NetworkVO",))
    n = len(patterns.PATTERNS)
    service.register_pattern(p, _only_yes)
    service.register_pattern(TagPattern("test::knob::{v}", ("L3NetworkVO",)), _only_yes)
    service.register_pattern(p)  # no validator given: the registered one stays
    assert len(patterns.PATTERNS) == n + 1
    tags = service.Tags(core=None)  # type: ignore[arg-type]  # validation of this pattern reads no database
    assert await tags.validate_system_tag("L3NetworkVO", None, "test::knob::yes") == p
    with pytest.raises(InvalidArgument, match="takes yes, but actual is 'no'"):
        await tags.validate_system_tag("L3NetworkVO", None, "test::knob::no")
    with pytest.raises(InvalidArgument, match="no system tag matches"):
        await tags.validate_system_tag("VmInstanceVO", None, "test::knob::yes")


def test_register_pattern_refuses_conflicts() -> None:
    service.register_pattern(TagPattern("test::knob::{v}", ("L3NetworkVO",)), _only_yes)
    with pytest.raises(ValueError, match="already registered"):
        service.register_pattern(TagPattern("test::knob::{v}", ("VmInstanceVO",)))
    with pytest.raises(ValueError, match="already has the validator _only_yes"):
        service.register_pattern(TagPattern("test::knob::{v}", ("L3NetworkVO",)), _other)


def test_flatnet_settings_register_twice_changes_nothing() -> None:
    from controller.flatnet_provider import settings

    settings.register()
    counts = len(globalconfig.CONFIGS), len(patterns.PATTERNS)
    settings.register()
    assert (len(globalconfig.CONFIGS), len(patterns.PATTERNS)) == counts
    assert settings.CONFIG in globalconfig.CONFIGS and settings.PATTERN in patterns.PATTERNS
