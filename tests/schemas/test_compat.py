"""Backward compatibility: the rules on synthetic pairs, then every committed schema version."""

from __future__ import annotations

import io
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from schemas import codec
from schemas.compat import backward_problems

REPO = Path(__file__).resolve().parents[2]


def rec(*fields: dict[str, Any], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(*symbols: str, name: str = "E", **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


def compatible(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return backward_problems(old, new) == []


# --- fields --------------------------------------------------------------------------------

def test_identical_schema_is_compatible() -> None:
    s = rec(f("a", "int"), f("b", ["null", "string"], default=None))
    assert compatible(s, s)


def test_added_field_needs_a_default() -> None:
    old = rec(f("a", "int"))
    without = rec(f("a", "int"), f("b", "string"))
    with_default = rec(f("a", "int"), f("b", "string", default="x"))
    problems = backward_problems(old, without)
    assert len(problems) == 1 and "b: field added without a default" in problems[0]
    assert compatible(old, with_default)
    # The other way round the new field is merely dropped by the reader.
    assert compatible(without, old)


def test_added_field_default_must_fit_its_type() -> None:
    old = rec(f("a", "int"))
    assert "default 'x' is not a valid int" in backward_problems(
        old, rec(f("a", "int"), f("n", "int", default="x")))[0]
    # A union's default belongs to its first branch.
    assert backward_problems(old, rec(f("a", "int"), f("u", ["null", "string"], default="x")))
    assert compatible(old, rec(f("a", "int"), f("u", ["string", "null"], default="x")))
    assert compatible(old, rec(f("a", "int"), f("m", {"type": "map", "values": "long"},
                                                  default={"k": 1})))
    assert backward_problems(old, rec(f("a", "int"), f("e", enum("x", "y"), default="z")))


def test_removed_field_is_fine_both_with_and_without_default() -> None:
    assert compatible(rec(f("a", "int"), f("gone", "string")), rec(f("a", "int")))
    assert compatible(rec(f("a", "int"), f("gone", "string", default="")), rec(f("a", "int")))


def test_renamed_field_needs_an_alias_or_a_default() -> None:
    old = rec(f("email", "string"))
    assert backward_problems(old, rec(f("address", "string")))
    assert compatible(old, rec(f("address", "string", aliases=["email"])))
    assert compatible(old, rec(f("address", "string", default="")))


# --- promotions ----------------------------------------------------------------------------

ALLOWED = [("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"),
           ("long", "double"), ("float", "double"), ("string", "bytes"), ("bytes", "string")]
REFUSED = [("long", "int"), ("float", "int"), ("double", "float"), ("double", "long"),
           ("float", "long"), ("int", "string"), ("string", "int"), ("boolean", "int"),
           ("int", "boolean"), ("null", "string"), ("string", "null")]


@pytest.mark.parametrize("old,new", ALLOWED)
def test_promotions_are_allowed(old: str, new: str) -> None:
    assert compatible(rec(f("x", old)), rec(f("x", new)))
    assert compatible(old, new)  # also at top level, not only inside records


@pytest.mark.parametrize("old,new", REFUSED)
def test_other_type_changes_are_refused(old: str, new: str) -> None:
    problems = backward_problems(rec(f("x", old)), rec(f("x", new)))
    assert problems == [f"x: type changed from {old} to {new}, which is not one of Avro's "
                        "promotions"]


def test_logical_types_do_not_change_resolution() -> None:
    ts = {"type": "long", "logicalType": "timestamp-millis"}
    assert compatible(rec(f("at", "long")), rec(f("at", ts)))
    assert compatible(rec(f("at", ts)), rec(f("at", {"type": "long"})))
    assert backward_problems(rec(f("at", ts)), rec(f("at", "int")))


# --- unions --------------------------------------------------------------------------------

def test_making_a_field_nullable_is_fine_the_reverse_is_not() -> None:
    plain = rec(f("x", "string"))
    nullable = rec(f("x", ["null", "string"], default=None))
    assert compatible(plain, nullable)
    problems = backward_problems(nullable, plain)
    assert problems and "writer's union branch null" in problems[0]


def test_union_branches_added_and_removed() -> None:
    assert compatible(rec(f("v", ["null", "long"])), rec(f("v", ["null", "long", "string"])))
    problems = backward_problems(rec(f("v", ["null", "long", "string"])),
                                 rec(f("v", ["null", "long"])))
    assert len(problems) == 1 and "writer's union branch string" in problems[0]
    # A branch the reader promotes to is enough.
    assert compatible(rec(f("v", ["null", "int"])), rec(f("v", ["null", "double"])))


def test_union_of_records_recurses_into_the_picked_branch() -> None:
    inner_old = rec(f("a", "int"), name="Inner")
    inner_new = rec(f("a", "int"), f("b", "int"), name="Inner")  # b lacks a default
    assert backward_problems(rec(f("x", ["null", inner_old])), rec(f("x", ["null", inner_new])))
    inner_ok = rec(f("a", "long"), f("b", "int", default=0), name="Inner")
    assert compatible(rec(f("x", ["null", inner_old])), rec(f("x", ["null", inner_ok])))


# --- enums ---------------------------------------------------------------------------------

def test_enum_symbols() -> None:
    old = rec(f("s", enum("sent", "failed")))
    assert compatible(old, rec(f("s", enum("sent", "failed", "duplicate"))))
    problems = backward_problems(old, rec(f("s", enum("sent"))))
    assert len(problems) == 1 and "lost symbol(s) failed" in problems[0]
    assert compatible(old, rec(f("s", enum("sent", "unknown", default="unknown"))))
    # The symbols added the other way round are lost by the old reader.
    assert backward_problems(rec(f("s", enum("sent", "failed", "duplicate"))), old)


# --- names ---------------------------------------------------------------------------------

def test_named_types_must_keep_their_name_or_alias_it() -> None:
    old = rec(f("s", enum("a", name="Status")))
    assert "enum name changed from t.Status to t.State without an alias" in backward_problems(
        old, rec(f("s", enum("a", name="State"))))[0]
    assert compatible(old, rec(f("s", enum("a", name="State", aliases=["Status"]))))
    assert backward_problems(rec(f("a", "int"), name="Old"), rec(f("a", "int"), name="New"))
    assert compatible(rec(f("a", "int"), name="Old"),
                      rec(f("a", "int"), name="New", aliases=["t.Old"]))
    # The namespace alone may change: resolution compares unqualified names.
    assert compatible(rec(f("a", "int")), {**rec(f("a", "int")), "namespace": "other"})


def test_fixed_size_and_name() -> None:
    fixed = {"type": "fixed", "name": "Id", "size": 16}
    assert compatible(rec(f("id", fixed)), rec(f("id", fixed)))
    assert "fixed size changed from 16 to 8" in backward_problems(
        rec(f("id", fixed)), rec(f("id", {**fixed, "size": 8})))[0]


# --- arrays, maps, nested records, references, recursion -----------------------------------

def test_arrays_and_maps_recurse() -> None:
    arr = lambda t: rec(f("xs", {"type": "array", "items": t}))  # noqa: E731
    mp = lambda t: rec(f("m", {"type": "map", "values": t}))  # noqa: E731
    assert compatible(arr("int"), arr("long"))
    assert backward_problems(arr("long"), arr("int")) == [
        "xs[]: type changed from long to int, which is not one of Avro's promotions"]
    assert compatible(mp(["null", "long"]), mp(["null", "long", "string"]))
    assert backward_problems(mp(["null", "string"]), mp(["null", "long"]))
    assert backward_problems(arr("int"), mp("int"))


def test_nested_record_field_added_without_default() -> None:
    old = rec(f("msg", rec(f("id", "string"), name="Msg")))
    new = rec(f("msg", rec(f("id", "string"), f("subject", "string"), name="Msg")))
    assert backward_problems(old, new) == [
        "msg.subject: field added without a default, so data written before it cannot be read"]


def test_named_references_and_recursive_types() -> None:
    node_old = {"type": "record", "name": "Node", "fields": [
        f("v", "int"), f("next", ["null", "Node"], default=None)]}
    node_new = {"type": "record", "name": "Node", "fields": [
        f("v", "long"), f("next", ["null", "Node"], default=None)]}
    assert compatible(node_old, node_new)
    assert backward_problems(node_new, node_old)
    # A type defined once and referenced by name later is checked at the reference too.
    old = rec(f("a", enum("x", "y", name="K")), f("b", "K"))
    new = rec(f("a", enum("x", "y", name="K")), f("b", "K"))
    assert compatible(old, new)


# --- the real schemas: every committed version against the working tree --------------------

def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, timeout=20).stdout


def committed_versions(repo: Path, rel: str) -> list[tuple[str, dict[str, Any]]]:
    """(commit, schema) of every committed version of `rel` in `repo`, newest first."""
    has_head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "HEAD"],
                              capture_output=True, timeout=20).returncode == 0
    if not has_head:  # a repository without any commit yet: no history at all
        return []
    commits = _git(repo, "log", "--format=%H", "--", rel).split()
    return [(c[:10], json.loads(_git(repo, "show", f"{c}:{rel}"))) for c in commits]


def sample(schema: Any, named: dict[str, Any], variant: int, ns: str | None = None) -> Any:
    """A datum of `schema`; `variant` picks different union branches and values."""
    if isinstance(schema, str) and schema not in (
            "null", "boolean", "int", "long", "float", "double", "bytes", "string"):
        full = schema if "." in schema or not ns else f"{ns}.{schema}"
        schema = named.get(full) or named[schema]
    if isinstance(schema, list):
        return sample(schema[variant % len(schema)], named, variant, ns)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            name = schema["name"]
            space = schema.get("namespace", ns)
            full = name if "." in name or not space else f"{space}.{name}"
            named[full] = schema
            inner = full.rpartition(".")[0] or None
            if kind == "enum":
                return schema["symbols"][variant % len(schema["symbols"])]
            if kind == "fixed":
                return b"\x01" * schema["size"]
            return {fl["name"]: sample(fl["type"], named, variant + i, inner)
                    for i, fl in enumerate(schema["fields"])}
        if kind == "array":
            return [sample(schema["items"], named, variant + i, ns) for i in range(2)]
        if kind == "map":
            return {f"k{i}": sample(schema["values"], named, variant + i, ns) for i in range(5)}
        if schema.get("logicalType") == "timestamp-millis":
            return 1_764_410_000_000 + variant
        return sample(kind, named, variant, ns)
    return {"null": None, "boolean": variant % 2 == 0, "int": 7 + variant,
            "long": 2**40 + variant, "float": 1.5, "double": 2.25 + variant,
            "bytes": b"b", "string": f"s{variant}"}[schema]


def _as_written(value: Any) -> Any:
    """A read value with timestamp-millis datetimes turned back into the ms that were written."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_written(v) for k, v in value.items()}
    return value


def check_against_history(repo: Path, rel: str) -> list[str]:
    """Check the working-tree `rel` against every committed version of it; return the labels
    of the versions checked. Fails (AssertionError) on the first incompatible version."""
    current = json.loads((repo / rel).read_text())
    versions = committed_versions(repo, rel)
    if not versions:
        # Not yet committed (a new schema): the only version is the working tree, which must
        # at least read its own data; the next change will be held to this version.
        versions = [("working-tree", current)]
    new = fastavro.parse_schema(current)
    for label, old in versions:
        problems = backward_problems(old, current)
        assert problems == [], (f"{rel} is not backward compatible with its version in "
                                f"{label}: {problems}")
        # Prove it with data: write with the old schema, read with the new one.
        old_parsed = fastavro.parse_schema(old)
        current_types = {c["name"]: c["type"] for c in current["fields"]}
        for variant in range(3):
            datum = sample(old, {}, variant)
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, old_parsed, datum)
            buf.seek(0)
            got = fastavro.schemaless_reader(buf, old_parsed, new)
            assert buf.tell() == len(buf.getvalue()), "the reader left bytes unread"
            assert set(got) == set(current_types)
            for fl in old["fields"]:
                if current_types.get(fl["name"]) == fl["type"]:  # unchanged field: same value
                    assert _as_written(got[fl["name"]]) == datum[fl["name"]], (
                        rel, label, fl["name"])
            for fl in current["fields"]:
                if fl["name"] not in datum and "default" in fl:  # added field: its default
                    assert _as_written(got[fl["name"]]) == fl["default"], (rel, label)
    return [label for label, _ in versions]


@pytest.mark.parametrize("name", codec.NAMES)
def test_current_schema_reads_every_committed_version(name: str) -> None:
    rel = f"schemas/{name}.avsc"
    checked = check_against_history(REPO, rel)
    committed = _git(REPO, "log", "--format=%H", "--", rel).split()
    # Either every commit was checked, or there is none and the working tree was, and said so.
    assert checked == [c[:10] for c in committed] or (not committed
                                                      and checked == ["working-tree"])


GIT_ID = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]


def _commit(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    _git(repo, *GIT_ID, "commit", "-q", "-m", message)


def test_history_check_on_a_scratch_repository(tmp_path: Path) -> None:
    """The git walk itself: new file, compatible evolution, then a breaking working tree."""
    _git(tmp_path, "init", "-q")
    avsc = tmp_path / "schemas" / "Thing.avsc"
    avsc.parent.mkdir()
    v1 = rec(f("id", "string"), f("n", "int"), name="Thing")
    avsc.write_text(json.dumps(v1))
    assert check_against_history(tmp_path, "schemas/Thing.avsc") == ["working-tree"]
    _commit(tmp_path, "v1")
    v2 = rec(f("id", "string"), f("n", "long"),
             f("tags", {"type": "map", "values": "string"}, default={}), name="Thing")
    avsc.write_text(json.dumps(v2))
    _commit(tmp_path, "v2")
    v3 = rec(f("id", "string"), f("n", "double"),
             f("tags", {"type": "map", "values": "string"}, default={}),
             f("note", ["null", "string"], default=None), name="Thing")
    avsc.write_text(json.dumps(v3))
    assert len(check_against_history(tmp_path, "schemas/Thing.avsc")) == 2
    # Breaking: a field added without a default; v1 and v2 data could not be read.
    avsc.write_text(json.dumps(rec(*v3["fields"], f("locale", "string"), name="Thing")))
    with pytest.raises(AssertionError, match="locale: field added without a default"):
        check_against_history(tmp_path, "schemas/Thing.avsc")


def test_compat_check_catches_a_breaking_edit_of_a_real_schema() -> None:
    # The same machinery must fail on a real schema broken on purpose: it can fail.
    current = codec.load_schema_json("InvitationRequested")
    broken = {**current, "fields": [*current["fields"], {"name": "locale", "type": "string"}]}
    assert backward_problems(current, broken) == [
        "locale: field added without a default, so data written before it cannot be read"]
    narrowed = {**current, "fields": [
        {**fl, "type": "int"} if fl["name"] == "automation_version" else fl
        for fl in current["fields"]]}
    assert backward_problems(current, narrowed)
