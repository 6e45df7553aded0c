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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _all_imports(path: Path, known: set[str]) -> set[str]:
    """Every module of ours ``path`` imports, at the top or inside a function (an import hidden in a function
    is still a cycle), except under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for n in ast.walk(block)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out & known


def _mutual_imports() -> list[tuple[str, str]]:
    paths = {_module_name(p): p for pkg in RULES for p in (ROOT / pkg).rglob("*.py")}
    graph = {m: _all_imports(p, set(paths)) for m, p in paths.items()}
    return sorted((a, b) for a in graph for b in graph[a]
                  if a < b and a in graph[b] and not (b.startswith(a + ".") or a.startswith(b + ".")))


def test_no_two_modules_import_each_other() -> None:
    """Issue #18: ``api/http`` ↔ ``compute/events``, ``compute/iso`` ↔ ``compute/vmstart`` and
    ``kvmagent/lifecycle`` ↔ ``kvmagent/server`` were real cycles (one side importing inside a function)."""
    assert _mutual_imports() == []
