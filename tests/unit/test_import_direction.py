"""DESIGN.md's import direction, every rule of it, enforced over every import (top level, inside functions,
relative):

* ``controller`` imports, of the other packages, only the agents' wire contracts (``kvmagent.contract``, and
  ``vrouter.contract`` for the router VM's agent) and the neutral ``zsutil``;
* ``kvmagent`` imports ``flatnet``, ``storage``, ``vrouter``'s contract and ``zsutil``, never ``controller``;
* the wire contracts import only themselves and ``zsutil`` (else the controller would reach ``flatnet`` or
  ``storage`` through them);
* ``flatnet``, ``storage`` and ``vrouter`` import none of ``controller``/``kvmagent``, nor each other;
* ``zsutil`` (runner, reverter, task supervisor, coded-error base) imports none of the others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Our top-level packages (vrouter is checked once it exists).
OURS = ("controller", "kvmagent", "flatnet", "storage", "vrouter", "zsutil")
PACKAGES = tuple(p for p in OURS if (ROOT / p / "__init__.py").exists())

#: What each part may import of OURS (module prefixes); the longest matching key governs a module.
ALLOWED: dict[str, tuple[str, ...]] = {
    "controller": ("controller", "kvmagent.contract", "vrouter.contract", "zsutil"),
    "kvmagent": ("kvmagent", "flatnet", "storage", "vrouter.contract", "zsutil"),
    "kvmagent.contract": ("kvmagent.contract", "zsutil"),
    "vrouter.contract": ("vrouter.contract", "zsutil"),
    "flatnet": ("flatnet", "zsutil"),
    "storage": ("storage", "zsutil"),
    "vrouter": ("vrouter", "zsutil"),
    "zsutil": ("zsutil",),
}


def _under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def _imports(path: Path, module: str = "") -> list[str]:
    """Every module ``path`` imports, anywhere in it; relative imports resolved against ``module`` (the
    dotted name of ``path``)."""
    out = []
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = pkg.split(".") if pkg else []
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            if node.module:
                out.append(base)
            else:
                out += [f"{base}.{a.name}" for a in node.names]
    return out


def _violations(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[str]:
    bad = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(path, root)
            rule = max((k for k in ALLOWED if _under(module, k)), key=len)
            for mod in _imports(path, module):
                if mod.split(".")[0] in OURS and not any(_under(mod, a) for a in ALLOWED[rule]):
                    bad.append(f"{path.relative_to(root)} imports {mod}")
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_import_direction(package: str) -> None:
    assert _violations(packages=(package,)) == []


def test_the_neutral_helpers_and_the_data_planes_are_there() -> None:
    for pkg in ("zsutil", "flatnet", "storage", "kvmagent/contract"):
        assert (ROOT / pkg / "__init__.py").exists(), pkg


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("from kvmagent.driver import libvirt_driver\nimport kvmagent.contract.vm\n")
    mods = _imports(f)
    assert mods == ["kvmagent.driver", "kvmagent.contract.vm"]


@pytest.mark.parametrize(("path", "source", "offence"), [
    ("controller/x.py", "from kvmagent.driver import base\n", "kvmagent.driver"),
    ("controller/x.py", "def f():\n    import flatnet.model\n", "flatnet.model"),
    ("controller/x.py", "from storage.errors import NotFound\n", "storage.errors"),
    ("kvmagent/x.py", "from controller import errors\n", "controller"),
    ("kvmagent/x.py", "from vrouter.render import render\n", "vrouter.render"),
    ("kvmagent/contract/x.py", "from flatnet.model import L3Spec\n", "flatnet.model"),
    ("kvmagent/contract/x.py", "from ..server import create_app\n", "kvmagent.server"),
    ("flatnet/x.py", "from storage.layout import check_id\n", "storage.layout"),
    ("flatnet/x.py", "import kvmagent.contract\n", "kvmagent.contract"),
    ("storage/x.py", "from flatnet import names\n", "flatnet"),
    ("storage/x.py", "from controller.errors import NotFound\n", "controller.errors"),
    ("vrouter/x.py", "from flatnet.dnsmasq import render\n", "flatnet.dnsmasq"),
    ("zsutil/x.py", "from storage.errors import StorageError\n", "storage.errors"),
    ("zsutil/x.py", "from kvmagent.contract.base import AgentError\n", "kvmagent.contract.base"),
])
def test_every_rule_is_checked(tmp_path: Path, path: str, source: str, offence: str) -> None:
    """Each rule of DESIGN.md, broken once in a scratch tree, is reported."""
    for pkg in OURS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "kvmagent" / "contract").mkdir()
    (tmp_path / "kvmagent" / "contract" / "__init__.py").write_text("")
    (tmp_path / path).write_text(source)
    assert _violations(tmp_path, OURS) == [f"{path} imports {offence}"]


@pytest.mark.parametrize(("path", "source"), [
    ("controller/x.py", "from kvmagent.contract import vm\nfrom zsutil.tasks import every\n"),
    ("controller/x.py", "from vrouter.contract import RouterState\n"),
    ("kvmagent/x.py", "from flatnet import service\nfrom storage import layout\nfrom zsutil import runner\n"),
    ("kvmagent/x.py", "from vrouter.contract import RouterState\n"),
    ("kvmagent/contract/x.py", "from .base import AgentError\nfrom zsutil.errors import CodedError\n"),
    ("storage/x.py", "from .layout import check_id\nfrom zsutil.revert import Reverter\n"),
])
def test_what_the_rules_allow_passes(tmp_path: Path, path: str, source: str) -> None:
    for pkg in OURS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "kvmagent" / "contract").mkdir()
    (tmp_path / "kvmagent" / "contract" / "__init__.py").write_text("")
    (tmp_path / path).write_text(source)
    assert _violations(tmp_path, OURS) == []


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
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
    paths = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {m: _all_imports(p, set(paths)) for m, p in paths.items()}
    return sorted((a, b) for a in graph for b in graph[a]
                  if a < b and a in graph[b] and not (b.startswith(a + ".") or a.startswith(b + ".")))


def test_no_two_modules_import_each_other() -> None:
    """Issue #18: ``api/http`` ↔ ``compute/events``, ``compute/iso`` ↔ ``compute/vmstart`` and
    ``kvmagent/lifecycle`` ↔ ``kvmagent/server`` were real cycles (one side importing inside a function)."""
    assert _mutual_imports() == []


def _package_edges() -> dict[str, set[str]]:
    """Imports between the second-level parts of our packages (``controller.compute``, ``controller.storage``,
    ``kvmagent.handlers``, ...), each module's imports counted for its part."""
    paths = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for m, p in paths.items():
        for dep in _all_imports(p, set(paths)):
            a, b = ".".join(m.split(".")[:2]), ".".join(dep.split(".")[:2])
            if a != b:
                edges.setdefault(a, set()).add(b)
    return edges


#: Package pairs that still import each other (issue #18 leaves them for later); the list may only shrink.
KNOWN_PACKAGE_CYCLES = [("controller.api", "controller.compute"), ("controller.backup", "controller.resources"),
                        ("controller.backup", "controller.storage")]


def test_compute_and_storage_packages_do_not_import_each_other() -> None:
    """Issue #18: ``controller.storage`` registered its hooks through ``controller.compute.extensions`` while
    compute uses storage's capacity and volumes; storage's hooks are now registered by
    ``controller.storage_hooks``. Compute may use storage, never the reverse."""
    edges = _package_edges()
    assert "controller.storage" in edges["controller.compute"]
    assert "controller.compute" not in edges.get("controller.storage", set())


def test_no_new_package_cycle() -> None:
    edges = _package_edges()
    mutual = sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, set()))
    assert mutual == KNOWN_PACKAGE_CYCLES
