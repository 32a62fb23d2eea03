"""What the project declares: its packages and dependencies, read from pyproject.toml and the
lock files, and the third-party imports of its code (shared by the tests of this folder)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The packages the wheel ships: `[tool.setuptools.packages.find] include`, e.g. "core*".
RUNTIME = tuple(p.rstrip("*").rstrip(".") for p in
                PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"])
FIRST_PARTY = {*RUNTIME, "tests", "bench"}
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>[^\s;\\]+)")


def requirements(group: str = "runtime") -> list[Requirement]:
    project = PYPROJECT["project"]
    raw = project["dependencies"] if group == "runtime" else \
        project["optional-dependencies"][group]
    return [Requirement(r) for r in raw]


def locked(name: str) -> dict[str, str]:
    """Canonical distribution name -> pinned version of a lock file."""
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        if m := _PIN.match(line):
            pins[canonicalize_name(m["name"])] = m["version"]
    return pins


def python_files(roots: Iterable[str]) -> list[Path]:
    return sorted(f for root in roots for f in (REPO / root).rglob("*.py")
                  if ".venv" not in f.parts)


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def third_party_imports(roots: Iterable[str]) -> dict[str, set[str]]:
    """Top-level import name -> the files (relative) that import it, absolute imports only,
    standard library and first-party packages left out. Imports inside functions count."""
    found: dict[str, set[str]] = {}
    for path in python_files(roots):
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found
