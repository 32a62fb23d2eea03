"""Dotted paths over nested JSON: `customer.city`, `items.0.sku`.

A path is a `.`-separated list of parts. On an object a part is a key; on an array a part of
ASCII digits is an index (`items.0`). Keys that contain a dot, and empty keys, cannot be
addressed (`flatten` still lists them, so the dry run shows that they exist).

`MISSING` (falsy, distinct from `None`) means "no such field"; JSON `null` is `None`.

`compile_take_in(mode, paths)` gives the function that keeps (include) or drops (exclude)
fields. Array indexes stay stable: an element dropped from the middle of an array becomes
`null`, so `items.2.sku` still names the same element afterwards; dropped trailing elements
are removed. The result shares the subtrees it keeps whole with the input (the worker never
mutates records): treat both as read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, Final, Literal

FieldsMode = Literal["include", "exclude"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final[Any] = _Missing()

# A selection trie: part -> sub-trie, or WHOLE when the path names that whole subtree.
Trie = dict[str, Any]
WHOLE: Final[None] = None
_ABSENT: Final = object()


@lru_cache(maxsize=8192)
def split_path(path: str) -> tuple[str, ...]:
    """The parts of a dotted path (cached: the same few paths are read for every record)."""
    return tuple(path.split("."))


def path_problem(path: object) -> str | None:
    """Why `path` is not a usable dotted path, or None when it is."""
    if not isinstance(path, str) or not path.strip():
        return "a field path must be a non-empty text such as 'customer.city'"
    if path != path.strip():
        return "a field path must not start or end with spaces"
    if any(part == "" for part in path.split(".")):
        return "a field path must not have an empty part (two dots in a row, or a dot at the " \
               "start or the end)"
    return None


def _index(part: str, size: int) -> int | None:
    if part.isascii() and part.isdigit():
        i = int(part)
        if i < size:
            return i
    return None


def get_parts(obj: Any, parts: tuple[str, ...]) -> Any:
    """The value at `parts` (see `split_path`), or MISSING."""
    cur = obj
    for part in parts:
        if type(cur) is dict:
            cur = cur.get(part, MISSING)
            if cur is MISSING:
                return MISSING
        elif type(cur) is list:
            i = _index(part, len(cur))
            if i is None:
                return MISSING
            cur = cur[i]
        else:
            return MISSING
    return cur


def get_path(obj: Any, path: str) -> Any:
    """The value at the dotted `path`, or MISSING when absent (a JSON null is None)."""
    return get_parts(obj, split_path(path))


def flatten(obj: Any) -> dict[str, Any]:
    """Every leaf of `obj` by dotted path, in document order.

    Leaves are scalars, null, and empty objects/arrays (so nothing present is invisible).
    A top-level scalar has no fields: {}. Iterative: any depth, never a RecursionError.
    """
    out: dict[str, Any] = {}
    if type(obj) is not dict and type(obj) is not list:
        return out
    # A stack of iterators over (path, value), so children come out in document order.
    stack: list[Any] = [_children(obj, "")]
    while stack:
        for path, value in stack[-1]:
            if (type(value) is dict or type(value) is list) and value:
                stack.append(_children(value, path))
                break
            out[path] = value
        else:
            stack.pop()
    return out


def _children(value: Any, prefix: str) -> Any:
    if type(value) is dict:
        return ((f"{prefix}.{key}" if prefix else str(key), sub) for key, sub in value.items())
    return ((f"{prefix}.{i}" if prefix else str(i), sub) for i, sub in enumerate(value))


def build_trie(paths: Iterable[str]) -> Trie:
    """A selection trie of `paths`; a path that names a subtree wins over paths inside it."""
    root: Trie = {}
    for path in paths:
        node = root
        parts = split_path(path)
        for part in parts[:-1]:
            child = node.get(part, _ABSENT)
            if child is WHOLE:
                break  # an ancestor is already selected whole
            if child is _ABSENT:
                child = node[part] = {}
            node = child
        else:
            node[parts[-1]] = WHOLE
    return root


def is_kept(mode: FieldsMode, paths: Iterable[str], field: str) -> bool:
    """Whether `field` survives taking in by (mode, paths) (at or under an included path; not
    at or under an excluded one). Used to check a configuration before any data arrives."""
    parts = split_path(field)
    covered = any(parts[: len(p)] == p for p in (split_path(x) for x in paths))
    return covered if mode == "include" else not covered


def compile_take_in(mode: FieldsMode, paths: Iterable[str]) -> Callable[[dict[str, Any]], Any]:
    """A function record -> taken-in record, for repeated use (the trie is built once)."""
    trie = build_trie(paths)
    if mode == "include":
        def include(record: dict[str, Any]) -> Any:
            out = _include(record, trie)
            return {} if out is MISSING else out
        return include
    if mode == "exclude":
        if not trie:
            return lambda record: record
        if all(sel is WHOLE for sel in trie.values()):
            # Only whole top-level fields left out (the usual exclude list): one dict
            # comprehension, the same result as `_exclude` (a parity property test).
            dropped = frozenset(trie)
            return lambda record: {k: v for k, v in record.items() if k not in dropped} \
                if type(record) is dict else _exclude(record, trie)
        return lambda record: _exclude(record, trie)
    raise ValueError(f"fields mode must be 'include' or 'exclude', not {mode!r}")


def _include(value: Any, trie: Trie) -> Any:
    if type(value) is dict:
        out = {}
        for key, sub in value.items():
            sel = trie.get(key, _ABSENT)
            if sel is _ABSENT:
                continue
            if sel is WHOLE:
                out[key] = sub
            else:
                kept = _include(sub, sel)
                if kept is not MISSING:
                    out[key] = kept
        return out if out else MISSING
    if type(value) is list:
        picked: dict[int, Any] = {}
        for part, sel in trie.items():
            i = _index(part, len(value))
            if i is None:
                continue
            kept = value[i] if sel is WHOLE else _include(value[i], sel)
            if kept is not MISSING:
                picked[i] = kept
        if not picked:
            return MISSING
        return [picked.get(i) for i in range(max(picked) + 1)]  # holes become null
    return MISSING  # a scalar where the path goes deeper: nothing to keep


_DROPPED: Final = object()


def _exclude(value: Any, trie: Trie) -> Any:
    if type(value) is dict:
        out = {}
        for key, sub in value.items():
            sel = trie.get(key, _ABSENT)
            if sel is _ABSENT:
                out[key] = sub
            elif sel is not WHOLE:
                out[key] = _exclude(sub, sel)
        return out
    if type(value) is list:
        items = list(value)
        for part, sel in trie.items():
            i = _index(part, len(items))
            if i is not None:
                items[i] = _DROPPED if sel is WHOLE else _exclude(items[i], sel)
        while items and items[-1] is _DROPPED:
            items.pop()
        return [None if x is _DROPPED else x for x in items]
    return value
