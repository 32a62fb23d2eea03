"""Settings are described, documented in docs/SETTINGS.md, and read only through
core.settings: no runtime module reads the environment by itself, bar the listed few."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from core import settings_doc
from core.settings import Settings
from tests.core.project import REPO, RUNTIME, parse, python_files

PAGE = REPO / "docs" / "SETTINGS.md"

# Reads of the process environment outside core/settings.py: (file, variable) -> why.
# "*" is the whole environment handed on. Anything else is a setting: add it to Settings.
ENVIRONMENT_READS = {
    # `hookstream up` starts each service as a child process with this environment on top of
    # its own, so a HOOKSTREAM_* variable set by the user reaches every service.
    ("hookstream/up.py", "*"): "the children's environment",
    # Whether the user *named* a broker (then `up` starts none). The setting always has a
    # value; `"kafka_bootstrap" in settings.model_fields_set` would tell the same through
    # Settings (pydantic records the fields set from the environment).
    ("hookstream/up.py", "HOOKSTREAM_KAFKA_BOOTSTRAP"): "was a broker named?",
    ("hookstream/local/kafka.py", "HOOKSTREAM_KAFKA_BOOTSTRAP"): "was a broker named? (bench)",
    # The XDG base-directory convention for per-user caches (the dev broker's classpath): a
    # platform variable, not a hookstream setting.
    ("hookstream/local/kafka.py", "XDG_CACHE_HOME"): "the user's cache directory",
}
_READERS = {"environ", "environb", "getenv", "getenvb"}


def test_every_setting_has_a_description() -> None:
    bare = [name for name, field in Settings.model_fields.items()
            if not (field.description or "").strip()]
    assert not bare, f"settings without a description: {bare}"


def test_settings_page_is_current() -> None:
    assert PAGE.read_text(encoding="utf-8") == settings_doc.render(), \
        "docs/SETTINGS.md is stale: run `make settings-doc`"


def test_page_lists_every_setting_once_with_its_type_and_default() -> None:
    page = settings_doc.render()
    for name, field in Settings.model_fields.items():
        env = f"HOOKSTREAM_{name.upper()}"
        rows = [ln for ln in page.splitlines() if ln.startswith(f"| `{env}` |")]
        assert len(rows) == 1, env
        cells = [c.strip() for c in rows[0].strip("|").split(" | ")]
        assert cells[3] == " ".join((field.description or "").split()), env
        assert ("*secret*" in cells[1]) == (field.annotation is SecretStr), env
    assert "| `HOOKSTREAM_TOPIC_PARTITIONS` | integer, ≥ 1 | `6` |" in page
    assert "| `HOOKSTREAM_INGRESS_CLIENT` | `rdkafka` \\| `aiokafka` | `rdkafka` |" in page
    titles = [ln[3:] for ln in page.splitlines() if ln.startswith("## ")]
    assert titles[0] == "Kafka" and len(titles) == len(set(titles)) > 1


def test_generator_runs_as_a_module(tmp_path: Path) -> None:
    out = tmp_path / "SETTINGS.md"
    subprocess.run([sys.executable, "-m", "core.settings_doc", "--output", str(out)],
                   cwd=REPO, check=True, capture_output=True, timeout=60)
    assert out.read_text(encoding="utf-8") == settings_doc.render()


def _environment_reads(path: Path) -> set[str]:
    """The variables a module reads through `os.environ`/`os.getenv`: "*" for the whole
    environment, "?" for a name it computes."""
    tree = parse(path)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    constants = {target.id: node.value.value for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                 for target in node.targets if isinstance(target, ast.Name)}
    reads: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            reads |= {"?" for alias in node.names if alias.name in _READERS}
        if not (isinstance(node, ast.Attribute) and node.attr in _READERS
                and isinstance(node.value, ast.Name) and node.value.id == "os"):
            continue
        called: ast.AST = node
        up = parents.get(node)
        if isinstance(up, ast.Attribute) and up.attr == "get":  # os.environ.get("X")
            called, up = up, parents.get(up)
        if isinstance(up, ast.Call) and up.func is called and up.args:  # os.getenv("X")
            key = up.args[0]
        elif isinstance(up, ast.Subscript):  # os.environ["X"]
            key = up.slice
        elif isinstance(up, ast.Compare) and isinstance(up.ops[0], ast.In | ast.NotIn):
            key = up.left  # "X" in os.environ
        else:
            reads.add("*")  # handed on whole: {**os.environ}, dict(os.environ), ...
            continue
        if isinstance(key, ast.Name):
            key = ast.Constant(constants.get(key.id))
        reads.add(key.value if isinstance(key, ast.Constant) and isinstance(key.value, str)
                  else "?")
    return reads


def test_runtime_reads_the_environment_only_through_settings() -> None:
    found = {(str(path.relative_to(REPO)), var)
             for path in python_files(RUNTIME) if path != REPO / "core" / "settings.py"
             for var in _environment_reads(path)}
    unlisted = sorted(found - set(ENVIRONMENT_READS))
    assert not unlisted, f"environment read outside core/settings.py: {unlisted}; make it a " \
        "setting (core.settings.Settings), or list it in ENVIRONMENT_READS with the reason"
    stale = sorted(set(ENVIRONMENT_READS) - found)
    assert not stale, f"no longer read, remove from ENVIRONMENT_READS: {stale}"


def test_environment_read_finder(tmp_path: Path) -> None:
    """The finder above sees each way of reading the environment (else the test is blind)."""
    probe = tmp_path / "probe.py"
    code = ("import os\nfrom os import getenv\nE = 'E'\n"
            "a = os.environ.get('A')\nb = os.environ['B']\nc = os.getenv('C', '1')\n"
            "d = 'D' in os.environ\ne = os.environ.get(E)\nf = dict(os.environ)\n")
    probe.write_text(code)
    assert _environment_reads(probe) == {"A", "B", "C", "D", "E", "*", "?"}
    computed = tmp_path / "computed.py"
    computed.write_text("import os\nx = os.environ.get(name)\n")
    assert _environment_reads(computed) == {"?"}
