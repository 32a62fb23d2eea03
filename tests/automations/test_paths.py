"""Dotted paths: get_path, flatten, taking fields in (include/exclude) and is_kept."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automations.paths import MISSING, compile_take_in, flatten, get_path, is_kept, path_problem

RECORD: dict[str, Any] = {
    "email": "jan@example.nl",
    "customer": {"city": "Utrecht", "name": None, "tags": [], "meta": {}},
    "items": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 1}],
    "0": "key that looks like an index",
}


def take_in(record: dict[str, Any], mode: Any, paths: list[str]) -> Any:
    """Keep only `paths` (include) or drop them (exclude), as the engine does per record."""
    return compile_take_in(mode, paths)(record)


@pytest.mark.parametrize(("path", "expected"), [
    ("email", "jan@example.nl"),
    ("customer.city", "Utrecht"),
    ("customer.name", None),
    ("customer.tags", []),
    ("items.0.sku", "A1"),
    ("items.1.qty", 1),
    ("items.2.sku", MISSING),
    ("items.-1.sku", MISSING),
    ("items.x", MISSING),
    ("items.0.sku.deeper", MISSING),
    ("customer.zip", MISSING),
    ("nope", MISSING),
    ("0", "key that looks like an index"),
])
def test_get_path(path: str, expected: Any) -> None:
    got = get_path(RECORD, path)
    if expected is MISSING:
        assert got is MISSING
    else:
        assert got == expected and got is not MISSING


def test_missing_is_falsy_and_distinct_from_null() -> None:
    assert not MISSING
    assert MISSING is not None
    assert get_path({"a": None}, "a") is None
    assert get_path({}, "a") is MISSING


def test_flatten_lists_leaves_including_empty_containers() -> None:
    assert flatten(RECORD) == {
        "email": "jan@example.nl",
        "customer.city": "Utrecht",
        "customer.name": None,
        "customer.tags": [],
        "customer.meta": {},
        "items.0.sku": "A1",
        "items.0.qty": 2,
        "items.1.sku": "B2",
        "items.1.qty": 1,
        "0": "key that looks like an index",
    }
    assert flatten({}) == {}
    assert flatten("scalar") == {}


def test_include_keeps_only_the_listed_paths() -> None:
    assert take_in(RECORD, "include", ["email", "customer.city"]) == {
        "email": "jan@example.nl", "customer": {"city": "Utrecht"}}


def test_include_a_subtree_keeps_it_whole() -> None:
    assert take_in(RECORD, "include", ["items", "items.0.sku"]) == {"items": RECORD["items"]}
    assert take_in(RECORD, "include", ["customer"])["customer"] == RECORD["customer"]


def test_include_array_index_keeps_indexes_stable() -> None:
    taken = take_in(RECORD, "include", ["items.1.sku"])
    assert taken == {"items": [None, {"sku": "B2"}]}
    assert get_path(taken, "items.1.sku") == "B2"


def test_include_of_absent_paths_gives_nothing() -> None:
    assert take_in(RECORD, "include", ["nope", "customer.zip", "items.9", "email.x"]) == {}
    assert take_in(RECORD, "include", []) == {}


def test_exclude_drops_the_listed_paths() -> None:
    taken = take_in(RECORD, "exclude", ["customer", "items.0.qty", "0"])
    assert taken == {"email": "jan@example.nl",
                     "items": [{"sku": "A1"}, {"sku": "B2", "qty": 1}]}
    assert RECORD["items"][0] == {"sku": "A1", "qty": 2}  # the input is untouched


def test_exclude_array_elements() -> None:
    assert take_in({"a": [1, 2, 3]}, "exclude", ["a.1"]) == {"a": [1, None, 3]}
    assert take_in({"a": [1, 2, 3]}, "exclude", ["a.2"]) == {"a": [1, 2]}
    assert take_in({"a": [1, 2, 3]}, "exclude", ["a.9", "b.c"]) == {"a": [1, 2, 3]}


def test_exclude_nothing_takes_everything() -> None:
    assert take_in(RECORD, "exclude", []) == RECORD


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="include"):
        take_in(RECORD, "keep", ["email"])


@pytest.mark.parametrize(("mode", "paths", "field", "kept"), [
    ("include", ["customer"], "customer.city", True),
    ("include", ["customer.city"], "customer.city", True),
    ("include", ["customer.city"], "customer", False),
    ("include", ["customer.city"], "customer.cityname", False),
    ("include", [], "email", False),
    ("exclude", ["customer"], "customer.city", False),
    ("exclude", ["customer.city"], "customer.name", True),
    ("exclude", [], "anything", True),
])
def test_is_kept(mode: str, paths: list[str], field: str, kept: bool) -> None:
    assert is_kept(mode, paths, field) is kept  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "ok"), [
    ("a", True), ("a.b.0", True), ("", False), ("  ", False), ("a..b", False),
    (".a", False), ("a.", False), (" a", False), (3, False), (None, False),
])
def test_path_problem(path: Any, ok: bool) -> None:
    assert (path_problem(path) is None) is ok


# --- properties ----------------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "0", "1", "naam", "straße", "é"]) | st.text(
    "xyz9é ✓", min_size=1, max_size=3)
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=8)
_json = st.recursive(_scalars, lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(_keys, children, max_size=4), max_leaves=20)
_records = st.dictionaries(_keys, _json, max_size=6)


@settings(max_examples=100, deadline=None)
@given(_records)
def test_flatten_and_get_path_agree(record: dict[str, Any]) -> None:
    for path, value in flatten(record).items():
        assert get_path(record, path) == value


@settings(max_examples=100, deadline=None)
@given(_records)
def test_include_of_every_flattened_path_returns_the_record(record: dict[str, Any]) -> None:
    assert take_in(record, "include", list(flatten(record))) == record


@settings(max_examples=100, deadline=None)
@given(_records, st.data())
def test_exclude_and_include_split_the_leaves(record: dict[str, Any], data: st.DataObject
                                              ) -> None:
    leaves = list(flatten(record))
    chosen = data.draw(st.lists(st.sampled_from(leaves), unique=True) if leaves
                       else st.just([]))
    excluded = take_in(record, "exclude", chosen)
    included = take_in(record, "include", chosen)
    for path in chosen:
        # dropped: gone, or a null hole that keeps later array indexes stable
        assert get_path(excluded, path) is MISSING or get_path(excluded, path) is None
        assert get_path(included, path) == get_path(record, path)
    for path in set(leaves) - set(chosen):
        assert get_path(excluded, path) == get_path(record, path)


def test_flatten_is_iterative_at_any_depth() -> None:
    # Recursive, 1,000 levels raised RecursionError in the dry run (issue 15).
    deep: Any = {"leaf": 1}
    for i in range(20_000):
        deep = {"k": deep} if i % 2 else [deep]
    flat = flatten(deep)
    [(path, value)] = flat.items()
    assert value == 1 and path.endswith(".leaf") and path.count(".") == 20_000


def test_flatten_keeps_document_order_across_levels() -> None:
    assert list(flatten({"a": {"b": 1, "c": [2, {"d": 3}]}, "e": 4, "f": {"g": {}}})) == [
        "a.b", "a.c.0", "a.c.1.d", "e", "f.g"]


# Exclude lists of whole top-level fields take a dict comprehension: the same result as the
# general trie walk (`_exclude`), whatever the record and the list.
_KEYS = st.sampled_from(["a", "b", "c", "0", "1", "internal_id", "a.b"])
_RECORDS = st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=3)),
                        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                st.dictionaries(_KEYS, inner, max_size=4)),
                        max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "0", "1", "internal_id"]), min_size=1,
                max_size=3),
       st.dictionaries(_KEYS, _RECORDS, max_size=6))
def test_exclude_fast_path_matches_the_trie_walk(paths: list[str],
                                                 record: dict[str, Any]) -> None:
    from automations.paths import _exclude, build_trie

    assert compile_take_in("exclude", paths)(record) == _exclude(record, build_trie(paths))
