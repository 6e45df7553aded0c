"""DESIGN.md's import direction, enforced: controller imports only kvmagent.contract; flatnet and storage
import neither controller nor kvmagent; kvmagent never imports controller."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RULES = {
    "controller": ("kvmagent", "kvmagent.contract"),
    "kvmagent": ("controller", None),
    "flatnet": ("controller", None),
    "storage": ("controller", None),
}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _violations(package: str, forbidden: str, allowed_prefix: str | None) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for mod in _imports(path):
            if mod == forbidden or mod.startswith(forbidden + "."):
                if allowed_prefix and (mod == allowed_prefix or mod.startswith(allowed_prefix + ".")):
                    continue
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    return bad


@pytest.mark.parametrize("package", sorted(RULES))
def test_import_direction(package: str) -> None:
    forbidden, allowed = RULES[package]
    assert _violations(package, forbidden, allowed) == []


@pytest.mark.parametrize("package", ["flatnet", "storage"])
def test_data_planes_do_not_import_the_agent(package: str) -> None:
    assert _violations(package, "kvmagent", None) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("from kvmagent.driver import libvirt_driver\nimport kvmagent.contract.vm\n")
    mods = _imports(f)
    assert mods == ["kvmagent.driver", "kvmagent.contract.vm"]
