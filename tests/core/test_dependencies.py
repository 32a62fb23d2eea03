"""The declared dependencies match the code, and the lock files match the declarations.

Runtime code may import only what `[project].dependencies` declares (not what happens to come
along with another package), and every runtime dependency is imported somewhere, bar the few
loaded by name listed below. Tests and benchmarks may import the runtime set and the `test`
extra. Both lock files pin every declared package within its bounds, and agree."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, packages_distributions, version

from packaging.utils import canonicalize_name

from tests.core.project import (
    PYPROJECT,
    REPO,
    RUNTIME,
    locked,
    requirements,
    third_party_imports,
)

# Runtime dependencies that no module imports, each loaded by name by another package.
LOADED_BY_NAME = {
    # uvicorn.run(..., http="httptools") in ingress/cli.py: uvicorn imports it itself.
    "httptools": "uvicorn, http='httptools'",
    # fastapi.templating.Jinja2Templates (the console's pages) imports jinja2 itself.
    "jinja2": "Starlette's Jinja2Templates, for the console's pages",
    # zoneinfo reads the `tzdata` package when the system has no zone database (send windows).
    "tzdata": "zoneinfo, where the system has no IANA time zone database",
}


def _declared(group: str) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements(group)}


def _distributions(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """Import name -> canonical names of the installed distributions that provide it."""
    provided = packages_distributions()
    return {name: {canonicalize_name(d) for d in provided.get(name, [])} for name in imports}


def test_runtime_code_imports_only_declared_runtime_dependencies() -> None:
    imports = third_party_imports(RUNTIME)
    declared = _declared("runtime")
    missing = {f"{name} ({', '.join(sorted(dists)) or 'not installed'})": sorted(imports[name])
               for name, dists in _distributions(imports).items() if not dists & declared}
    assert not missing, f"runtime modules import packages missing from " \
        f"[project].dependencies: {missing}; declare them and run `make lock`"


def test_every_runtime_dependency_is_imported_or_loaded_by_name() -> None:
    imported = set().union(*_distributions(third_party_imports(RUNTIME)).values())
    unused = _declared("runtime") - imported - set(LOADED_BY_NAME)
    assert not unused, f"declared runtime dependencies no runtime module imports: {unused}; " \
        "drop them, or list them in LOADED_BY_NAME with who loads them"
    stale = set(LOADED_BY_NAME) & imported
    assert not stale, f"{stale} are imported now: remove them from LOADED_BY_NAME"
    assert set(LOADED_BY_NAME) <= _declared("runtime")


def test_tests_and_benchmarks_import_only_declared_packages() -> None:
    imports = third_party_imports(["tests", "bench"])
    declared = _declared("runtime") | _declared("test")
    missing = {name: sorted(imports[name]) for name, dists in _distributions(imports).items()
               if not dists & declared}
    assert not missing, f"tests/bench import packages declared nowhere: {missing}; " \
        "add them to the `test` extra of pyproject.toml and run `make lock`"


def test_the_locks_pin_every_declared_package_within_its_bounds() -> None:
    runtime, test = locked("requirements.lock"), locked("requirements-test.lock")
    for lock, pins, groups in (("requirements.lock", runtime, ["runtime"]),
                               ("requirements-test.lock", test, ["runtime", "test"])):
        for requirement in (r for g in groups for r in requirements(g)):
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{name} is not in {lock}: run `make lock`"
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"{lock} pins {name}=={pins[name]}, outside {requirement}: run `make lock`"
    differ = {n: (v, test.get(n)) for n, v in runtime.items() if test.get(n) != v}
    assert not differ, f"the runtime and test locks disagree: {differ}: run `make lock`"
    for lock in ("requirements.lock", "requirements-test.lock"):
        # pip's --require-hashes (make install, the Dockerfile) wants one for every pin.
        pinned_lines = [ln for ln in (REPO / lock).read_text().splitlines() if "==" in ln]
        assert all(ln.endswith(" \\") for ln in pinned_lines), f"{lock}: a pin lacks hashes"


def test_this_environment_is_the_locked_one() -> None:
    """`make install` installs requirements-test.lock: what the suite runs on is what it pins."""
    off = {}
    for name, pinned in locked("requirements-test.lock").items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            off[name] = (pinned, installed)
    assert not off, f"installed versions differ from requirements-test.lock: {off}; " \
        "run `make install`"


def test_package_lists_agree() -> None:
    """The packages the wheel ships are the ones import-linter checks and ruff sorts as ours,
    and every top-level Python package of the repository (bar tests) is one of them."""
    tool = PYPROJECT["tool"]
    assert set(tool["importlinter"]["root_packages"]) == set(RUNTIME)
    assert set(tool["ruff"]["lint"]["isort"]["known-first-party"]) == set(RUNTIME)
    on_disk = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert on_disk == set(RUNTIME), f"packages not in pyproject.toml: {on_disk - set(RUNTIME)}"
    layers = next(c for c in tool["importlinter"]["contracts"] if c["type"] == "layers")
    in_layers = [m.strip() for layer in layers["layers"] for m in layer.split("|")]
    assert sorted(in_layers) == sorted(RUNTIME), "each package in exactly one layer"
