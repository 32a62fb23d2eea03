"""Backward compatibility of every schema with all its committed versions (from git
history), checked by Apache Avro's own reader/writer compatibility checker and proven with
data: written with the old version, read with the current one."""

from __future__ import annotations

import io
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas import codec

REPO = Path(__file__).resolve().parents[2]


def incompatibilities(old: Any, new: Any) -> list[str]:
    """Why a reader with schema `new` cannot read data written with `old` (empty: it can),
    in Avro's words, plus every field default of `new` that does not fit its type (the
    checker takes defaults on trust; data written before a field existed reads as it)."""
    reader = avro.schema.parse(json.dumps(new))
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        reader=reader, writer=avro.schema.parse(json.dumps(old)))
    problems = [] if result.compatibility is SchemaCompatibilityType.compatible else [
        f"{', '.join(sorted(i.value for i in set(result.incompatibilities)))} at "
        f"{', '.join(sorted(result.locations))}: {'; '.join(sorted(result.messages))}"]
    return problems + bad_defaults(reader)


def bad_defaults(schema: avro.schema.Schema, seen: set[str] | None = None) -> list[str]:
    """Fields (of any nested record) whose default is not a value of their type; a union's
    default belongs to its first branch, as the specification says."""
    seen = set() if seen is None else seen
    if isinstance(schema, avro.schema.UnionSchema):
        return [p for branch in schema.schemas for p in bad_defaults(branch, seen)]
    if isinstance(schema, avro.schema.ArraySchema):
        return bad_defaults(schema.items, seen)
    if isinstance(schema, avro.schema.MapSchema):
        return bad_defaults(schema.values, seen)
    if not isinstance(schema, avro.schema.RecordSchema) or schema.fullname in seen:
        return []
    seen.add(schema.fullname)
    problems = []
    for fl in schema.fields:
        if fl.has_default:
            typ = fl.type
            first = typ.schemas[0] if isinstance(typ, avro.schema.UnionSchema) else typ
            if not avro.io.validate(first, fl.default):
                problems.append(f"{fl.name}: default {fl.default!r} is not a {first.type}")
        problems += bad_defaults(fl.type, seen)
    return problems


def rec(*fields: dict[str, Any], name: str = "R", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


# --- the rules our schemas evolve by, as the checker applies them ---------------------------
# Not a test of Avro: of the way it is called (reader and writer the right way round) and of
# the default check added to it.

def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "E", "symbols": list(symbols), **extra}


COMPATIBLE = [
    ("a field added with a default", rec(f("a", "int")),
     rec(f("a", "int"), f("b", ["null", "string"], default=None))),
    ("a field removed", rec(f("a", "int"), f("gone", "string")), rec(f("a", "int"))),
    ("int promoted to long", rec(f("x", "int")), rec(f("x", "long"))),
    ("a field made nullable", rec(f("x", "string")),
     rec(f("x", ["null", "string"], default=None))),
    ("an enum symbol added", rec(f("s", enum("sent"))), rec(f("s", enum("sent", "failed")))),
    ("a field renamed with an alias", rec(f("email", "string")),
     rec(f("address", "string", aliases=["email"]))),
]
INCOMPATIBLE = [
    ("a field added without a default", rec(f("a", "int")),
     rec(f("a", "int"), f("locale", "string")), "reader_field_missing_default_value"),
    ("long narrowed to int", rec(f("x", "long")), rec(f("x", "int")), "type_mismatch"),
    ("a nullable field made required", rec(f("x", ["null", "string"], default=None)),
     rec(f("x", "string")), "type_mismatch"),
    ("an enum symbol removed", rec(f("s", enum("sent", "failed"))), rec(f("s", enum("sent"))),
     "missing_enum_symbols"),
    ("a default that is not its type", rec(f("a", "int")),
     rec(f("a", "int"), f("n", ["null", "int"], default=3)), "n: default 3 is not a null"),
]


@pytest.mark.parametrize(("what", "old", "new"), COMPATIBLE, ids=[c[0] for c in COMPATIBLE])
def test_compatible_changes(what: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    assert incompatibilities(old, new) == []


@pytest.mark.parametrize(("what", "old", "new", "why"), INCOMPATIBLE,
                         ids=[c[0] for c in INCOMPATIBLE])
def test_incompatible_changes(what: str, old: dict[str, Any], new: dict[str, Any],
                              why: str) -> None:
    problems = incompatibilities(old, new)
    assert len(problems) == 1 and why in problems[0], problems


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
        problems = incompatibilities(old, current)
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


HISTORY = sorted(codec.HISTORY_DIR.glob("*.avsc"))


@pytest.mark.parametrize("path", HISTORY, ids=[p.name for p in HISTORY])
def test_current_schema_reads_every_kept_version(path: Path) -> None:
    """Every version in schemas/history/ (what the codec resolves at run time, whatever git
    says): named by its real fingerprint, and readable by the current schema."""
    name, _, hexfp = path.stem.partition(".")
    assert name in codec.NAMES, path.name
    old = json.loads(path.read_text())
    assert codec.fingerprint_of(fastavro.parse_schema(old)).hex() == hexfp, path.name
    assert incompatibilities(old, codec.load_schema_json(name)) == [], path.name


def test_every_schema_has_its_kept_versions_checked() -> None:
    # The parametrisation above is not empty by accident.
    assert {p.stem.partition(".")[0] for p in HISTORY} >= {"AutomationSnapshot"}


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
    with pytest.raises(AssertionError, match="reader_field_missing_default_value at .*: locale"):
        check_against_history(tmp_path, "schemas/Thing.avsc")


def test_compat_check_catches_a_breaking_edit_of_a_real_schema() -> None:
    # The same machinery must fail on a real schema broken on purpose: it can fail.
    current = codec.load_schema_json("InvitationRequested")
    broken = {**current, "fields": [*current["fields"], {"name": "locale", "type": "string"}]}
    assert incompatibilities(current, broken) == [
        f"reader_field_missing_default_value at /fields/{len(current['fields'])}: locale"]
    narrowed = {**current, "fields": [
        {**fl, "type": "int"} if fl["name"] == "automation_version" else fl
        for fl in current["fields"]]}
    [problem] = incompatibilities(current, narrowed)
    assert problem.startswith("type_mismatch")


# --- earlier versions are decodable at run time ---------------------------------------------

@pytest.mark.parametrize("name", codec.NAMES)
def test_every_committed_version_is_current_or_kept_for_decoding(name: str) -> None:
    """A message written by a process of an earlier commit (still on a topic, or sent during
    a rolling upgrade) names its writer schema's fingerprint: the codec must know it."""
    rel = f"schemas/{name}.avsc"
    known = {codec.fingerprint(name).hex()} | {
        p.stem.partition(".")[2] for p in (REPO / "schemas" / "history").glob(f"{name}.*.avsc")}
    for label, old in committed_versions(REPO, rel):
        fp = fastavro.schema.fingerprint(
            fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(old)), "CRC-64-AVRO")
        assert fp in known, (f"{rel} of {label} (fingerprint {fp}) is neither current nor "
                             f"in schemas/history/: add it as schemas/history/{name}.{fp}.avsc")


@pytest.mark.parametrize("path", sorted((REPO / "schemas" / "history").glob("*.avsc")),
                         ids=lambda p: p.name)
def test_a_message_of_a_kept_version_decodes_into_the_current_one(path: Path) -> None:
    name, _, fp = path.stem.partition(".")
    old = json.loads(path.read_text())
    old_parsed = fastavro.parse_schema(old)
    assert fastavro.schema.fingerprint(fastavro.schema.to_parsing_canonical_form(old_parsed),
                                       "CRC-64-AVRO") == fp, "the file name's fingerprint"
    assert incompatibilities(old, codec.load_schema_json(name)) == []
    datum = sample(old, {}, 1)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old_parsed, datum)
    got_name, got = codec.decode(codec.MAGIC + bytes.fromhex(fp) + buf.getvalue())
    assert got_name == name
    current = codec.load_schema_json(name)
    assert set(got) == {fl["name"] for fl in current["fields"]}
    for fl in current["fields"]:
        if fl["name"] in datum:
            assert _as_written(got[fl["name"]]) == datum[fl["name"]]
        else:
            assert _as_written(got[fl["name"]]) == fl["default"]
