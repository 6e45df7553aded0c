"""Releases installed side by side: ``<prefix>/releases/<version>/`` each with its own virtualenv, ``current``
pointing at the one in use, ``previous`` at the one before it (``zstack-ctl rollback``).

Layout (``<prefix>`` is ``$ZSTACK_PREFIX``, default ``/opt/zstack-py``)::

    releases/<version>/venv/              the release's own virtualenv (the wheel and its dependencies)
    releases/<version>/wheel/<wheel>      the wheel it was installed from (the agent package served to hosts)
    releases/<version>/release.json       version, schema version, agent protocol level, wheel sha256, date
    current -> releases/<version>         what the controller unit, zstack-ctl and zstack-cli run
    previous -> releases/<version>        the release ``current`` pointed at before the last switch

The checkout a release was built from is not needed once it is installed. Development installs
(``scripts/install.sh --dev``: the editable ``/opt/zstack-py/venv``) have no ``current``.

Standard library only: ``scripts/install.sh`` runs this module with the system python from a checkout
(``python3 -m controller.release install <wheel>``) before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_PREFIX = "/opt/zstack-py"
BASE_PYTHON = "/usr/bin/python3"
_WHEEL = re.compile(r"zstack_py-([0-9][0-9A-Za-z.+!]*)-py3-none-any\.whl")
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+!]*")
# Run by the release's own python (``-P``: never the working directory's code): what it is (the code inside
# the venv says, not the wheel's name).
# A release before 0.2.0 has no protocol level: its agents count as level 0 (CHANGELOG 0.2.0).
_DESCRIBE = ("import json; import controller.version as v; "
             "from controller.db.database import migrations; "
             "print(json.dumps({'version': v.VERSION, 'schemaVersion': migrations()[-1][0], "
             "'agentProtocol': getattr(v, 'PROTOCOL_LEVEL', 0)}))")


class ReleaseError(Exception):
    pass


def prefix() -> Path:
    return Path(os.environ.get("ZSTACK_PREFIX") or DEFAULT_PREFIX)


def releases_dir(p: Path) -> Path:
    return p / "releases"


def _link(p: Path, name: str) -> Path | None:
    link = p / name
    if not link.is_symlink():
        return None
    target = link.resolve()
    return target if target.is_dir() else None


def current(p: Path) -> Path | None:
    """The release in use (None: no release install here, e.g. a development install)."""
    return _link(p, "current")


def previous(p: Path) -> Path | None:
    return _link(p, "previous")


def python(release: Path) -> Path:
    return release / "venv" / "bin" / "python"


def info(release: Path) -> dict[str, Any]:
    """release.json of an installed release (ReleaseError when it is not one)."""
    try:
        data = json.loads((release / "release.json").read_text())
    except (OSError, ValueError) as e:
        raise ReleaseError(f"{release} is not an installed release (no readable release.json: {e})") from e
    if not python(release).is_file():
        raise ReleaseError(f"{release} is not an installed release: {python(release)} is missing")
    return dict(data)


def wheel_version(wheel: Path) -> str:
    m = _WHEEL.fullmatch(wheel.name)
    if not m:
        raise ReleaseError(f"{wheel}: not a zstack-py wheel (expected zstack_py-<version>-py3-none-any.whl)")
    return m.group(1)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def clean_env() -> dict[str, str]:
    """The environment for a release's python: no PYTHONPATH/PYTHONHOME (they would put other code first)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(argv: list[str], what: str, timeout: float = 1200) -> str:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=clean_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ReleaseError(f"{what} failed: {e}") from e
    if cp.returncode != 0:
        raise ReleaseError(f"{what} failed (exit {cp.returncode}): {(cp.stderr or cp.stdout).strip()[-2000:]}")
    return cp.stdout


#: What a wheel is built from: the packages (pyproject's ``packages.find``) and the files pyproject names.
SOURCE_PACKAGES = ("controller", "kvmagent", "flatnet", "storage", "vrouter", "zsutil")
SOURCE_FILES = ("pyproject.toml", "README.md")


def source_copy(checkout: Path, dst: Path) -> Path:
    """A clean copy of what a wheel is built from, in the new directory ``dst``. ``pip wheel <checkout>`` builds
    in the checkout's ``build/lib`` and ships whatever is left there: a file deleted from the tree since the last
    build would still be in the wheel (seen: a moved module's old copy reached hosts)."""
    dst.mkdir(parents=True)
    for name in SOURCE_FILES:
        if (checkout / name).is_file():
            shutil.copy2(checkout / name, dst / name)
    for pkg in SOURCE_PACKAGES:
        if not (checkout / pkg).is_dir():  # an older release (0.1.0 had no vrouter, zsutil)
            continue
        shutil.copytree(checkout / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dst


def build_wheel(checkout: Path, out_dir: Path, base_python: str = BASE_PYTHON) -> Path:
    """A wheel of the checkout, built in a throwaway virtualenv (pip's isolated build: setuptools from the
    configured index); returns its path in ``out_dir``."""
    if not (checkout / "pyproject.toml").is_file():
        raise ReleaseError(f"{checkout} is not a ZStack-Py checkout (no pyproject.toml)")
    out_dir.mkdir(parents=True, exist_ok=True)
    build = out_dir / f".build-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    try:
        _run([base_python, "-m", "venv", str(build / "venv")], "creating the build virtualenv")
        src = source_copy(checkout, build / "src")
        _run([str(build / "venv" / "bin" / "pip"), "wheel", "--no-deps", "-q", "-w", str(build / "dist"),
              str(src)], f"building the wheel of {checkout}")
        wheels = sorted((build / "dist").glob("zstack_py-*.whl"))
        if len(wheels) != 1:
            raise ReleaseError(f"pip wheel produced {[w.name for w in wheels]} in {build / 'dist'}")
        target = out_dir / wheels[0].name
        os.replace(wheels[0], target)
        return target
    finally:
        shutil.rmtree(build, ignore_errors=True)


def install(wheel: Path, p: Path, *, pip_args: list[str] | None = None, base_python: str = BASE_PYTHON,
            log: Any = print) -> Path:
    """Install ``wheel`` into ``releases/<version>/`` (a new virtualenv; dependencies from pip's configured
    index, ``PIP_INDEX_URL`` for a mirror). An installed release of the same wheel is reused; the release in
    use is never overwritten. Returns the release directory (``current`` is not changed)."""
    wheel = wheel.resolve()
    if not wheel.is_file():
        raise ReleaseError(f"no wheel at {wheel}")
    version = wheel_version(wheel)
    digest = sha256(wheel)
    target = releases_dir(p) / version
    if target.exists():
        with contextlib.suppress(ReleaseError):
            if info(target).get("wheelSha256") == digest:
                log(f"release {version} from this wheel is already installed in {target}")
                return target
        if current(p) == target.resolve():
            raise ReleaseError(f"release {version} is the one in use ({p / 'current'}) and was installed from "
                               "another wheel; build the new one with another version")
        log(f"replacing the unused release directory {target}")
        shutil.rmtree(target)
    releases_dir(p).mkdir(parents=True, exist_ok=True)
    # Built in place (a virtualenv is not relocatable); release.json is written last: a directory without it
    # is an unfinished install, replaced by the next one.
    try:
        log(f"installing release {version} into {target}")
        _run([base_python, "-m", "venv", str(target / "venv")], "creating the release virtualenv")
        _run([str(target / "venv" / "bin" / "pip"), "install", "-q", *(pip_args or []), str(wheel)],
             f"pip install {wheel.name}")
        (target / "wheel").mkdir()
        shutil.copy2(wheel, target / "wheel" / wheel.name)
        described = json.loads(_run([str(python(target)), "-P", "-c", _DESCRIBE],
                                    "reading the release's versions"))
        if described["version"] != version:
            raise ReleaseError(f"{wheel.name} says release {described['version']} inside, not {version}")
        data = {**described, "wheel": wheel.name, "wheelSha256": digest,
                "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (target / "release.json").write_text(json.dumps(data, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _set_link(p: Path, name: str, target: Path) -> None:
    """Point ``<p>/<name>`` at ``target`` atomically (a relative link when the target is under ``p``)."""
    try:
        dest: str | Path = target.relative_to(p)
    except ValueError:
        dest = target
    tmp = p / f".{name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(dest, tmp)
    os.replace(tmp, p / name)


def switch(p: Path, release: Path) -> Path | None:
    """Make ``release`` current; the release that was current becomes ``previous``. Returns it."""
    info(release)
    old = current(p)
    if old is not None and old != release.resolve():
        _set_link(p, "previous", old)
    _set_link(p, "current", release.resolve())
    return old


def shipped_wheel(version: str) -> Path | None:
    """The wheel the running code was installed from, when it runs from a release's virtualenv."""
    d = Path(sys.prefix).resolve().parent / "wheel"
    wheels = sorted(d.glob(f"zstack_py-{version}-*.whl")) if d.is_dir() else []
    return wheels[-1] if wheels else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m controller.release", description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", default=None, help=f"install prefix (default $ZSTACK_PREFIX or {DEFAULT_PREFIX})")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a wheel of a checkout; prints its path")
    b.add_argument("checkout")
    b.add_argument("out_dir")
    i = sub.add_parser("install", help="install a wheel as a release; prints the release directory")
    i.add_argument("wheel")
    i.add_argument("--switch", action="store_true", help="make it current (first install)")
    sub.add_parser("current", help="print the release in use")
    args = ap.parse_args(argv)
    p = Path(args.prefix) if args.prefix else prefix()
    try:
        if args.cmd == "build":
            print(build_wheel(Path(args.checkout).resolve(), Path(args.out_dir)))
        elif args.cmd == "install":
            target = install(Path(args.wheel), p, log=lambda m: print(m, file=sys.stderr))
            if args.switch:
                switch(p, target)
            print(target)
        else:
            cur = current(p)
            if cur is None:
                print(f"no release installed under {p}", file=sys.stderr)
                return 1
            print(cur)
    except ReleaseError as e:
        print(f"release: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
