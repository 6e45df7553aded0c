"""The agent wheel cache of controller/compute/deploy.py is keyed by a digest of the package sources: a wheel
built from other code with the same version is never deployed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.compute import deploy
from controller.version import VERSION


def _tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'zstack-py'\n")
    for pkg in deploy.WHEEL_PACKAGES:
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text(f"# {pkg}\n")
    return root


def _write_wheel(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"fresh")


def test_package_digest_follows_every_source_file_and_ignores_bytecode(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    d0 = deploy.package_digest(root)
    (root / "kvmagent" / "__pycache__").mkdir()
    (root / "kvmagent" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert deploy.package_digest(root) == d0
    (root / "controller" / "schema.sql").write_text("CREATE TABLE t(x);\n")
    d1 = deploy.package_digest(root)
    assert d1 != d0
    (root / "storage" / "__init__.py").write_text("# storage, changed\n")
    assert deploy.package_digest(root) not in (d0, d1)


def test_agent_digest_matches_the_remote_probe_over_installed_modules(tmp_path: Path) -> None:
    """REMOTE_DIGEST (run on a host over its installed modules) computes what agent_digest computes here."""
    import subprocess
    import sys

    root = _tree(tmp_path / "src")
    (root / "kvmagent" / "sub").mkdir()
    (root / "kvmagent" / "sub" / "__init__.py").write_text("x = 1\n")
    cp = subprocess.run([sys.executable, "-c", deploy.REMOTE_DIGEST], capture_output=True, text=True,
                        cwd=root, env={"PYTHONPATH": str(root)}, check=True)
    assert cp.stdout.strip() == deploy.agent_digest(root)


def test_a_wheel_of_other_sources_with_the_same_version_is_not_reused(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "src")
    base = tmp_path / "packages"
    name = f"zstack_py-{VERSION}-py3-none-any.whl"
    stale = base / ("0" * 32) / name  # same version, other code
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    builds: list[list[str]] = []

    async def pip_wheel(argv: list[str], **_: Any) -> None:  # stands in for `pip wheel` (a slow network build)
        builds.append(argv)
        await asyncio.to_thread(_write_wheel, Path(argv[argv.index("-w") + 1]) / name)

    monkeypatch.setattr(deploy, "run", pip_wheel)
    core = SimpleNamespace(config=SimpleNamespace(agent_package_dir=str(base)))
    wheel = asyncio.run(deploy.build_wheel(core, root))  # type: ignore[arg-type]
    assert wheel.read_bytes() == b"fresh" and wheel.parent.name == deploy.package_digest(root)[:32]
    assert len(builds) == 1 and Path(builds[0][-1]).name.endswith("-src")  # a clean copy of root, not root
    # cached: the same sources do not build again; changed sources do
    assert asyncio.run(deploy.build_wheel(core, root)) == wheel  # type: ignore[arg-type]
    assert len(builds) == 1
    (root / "kvmagent" / "__init__.py").write_text("# changed\n")
    other = asyncio.run(deploy.build_wheel(core, root))  # type: ignore[arg-type]
    assert other != wheel and len(builds) == 2
    assert not list(base.glob(".build-*")), "temporary build directories are removed"


def test_wheels_are_built_from_a_clean_copy_of_the_sources(tmp_path: Path) -> None:
    """``pip wheel <checkout>`` would ship what an earlier build left in the checkout's build/lib (a module deleted
    from the tree since): the wheel is built from a copy holding only the packages and the files pyproject names."""
    from controller.release import SOURCE_PACKAGES, source_copy

    assert set(deploy.WHEEL_PACKAGES) == set(SOURCE_PACKAGES)
    root = _tree(tmp_path / "tree")
    (root / "README.md").write_text("readme\n")
    (root / "build" / "lib" / "storage").mkdir(parents=True)
    (root / "build" / "lib" / "storage" / "revert.py").write_text("# a module deleted from the tree\n")
    (root / "kvmagent" / "__pycache__").mkdir()
    (root / "kvmagent" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    src = source_copy(root, tmp_path / "copy")
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    assert files == sorted(["pyproject.toml", "README.md", *(f"{p}/__init__.py" for p in SOURCE_PACKAGES)])
