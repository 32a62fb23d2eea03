"""One automation as straight-line Python: `fast_process(compiled)` is `compiled.process`,
generated once per snapshot for the streams worker (issue 17).

The engine (`engine.CompiledAutomation.process`) walks its take-in, filter tree and mapping
generically for every record: a lambda per condition, a generator per group, `get_parts` per
field, a loop over the mapping. That dispatch cost the worker about as much as the work
itself (bench/README.md, "The worker per CPU second"). Here the same plan becomes one
function per automation: each field read is a dict lookup written out, each condition an
inline test with a fast path for the usual operands (a plain text `eq`, a text list `in`, a
number compared with an int), each mapping one assignment.

Semantics stay the engine's: every condition's general case calls the very test the engine
compiled (`filters._make_test`); a filtered record's reason comes from the engine's filter;
and anything that is not the plain path (a missing or invalid e-mail address, a value that
does not fit its variable, an unknown variable type) returns `compiled.process(record)`,
the reference itself, which reports it. A Hypothesis test compares both on random records
and automations (tests/automations/test_fastpath.py).

No value from the snapshot is written into the generated source: keys, texts and tests are
names bound in the function's namespace.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from automations.coerce import CoercionError, Unfit, _date_text, normalize_email
from automations.engine import Accepted, CompiledAutomation, FilteredOut, Outcome, Rejected
from automations.filters import _make_test, _Operand
from automations.paths import MISSING, WHOLE, build_trie, get_parts, split_path

_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1


class _Source:
    """The generated function's lines and the namespace its names refer to."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"MISSING": MISSING, "get_parts": get_parts,
                                   "Accepted": Accepted, "FilteredOut": FilteredOut,
                                   "Rejected": Rejected, "Unfit": Unfit,
                                   "CoercionError": CoercionError,
                                   "normalize_email": normalize_email, "date_text": _date_text,
                                   "LONG_MIN": _LONG_MIN, "LONG_MAX": _LONG_MAX}
        self._ids = itertools.count()

    def bind(self, value: Any, prefix: str = "c") -> str:
        name = f"{prefix}{next(self._ids)}"
        self.ns[name] = value
        return name

    def temp(self) -> str:
        return f"_v{next(self._ids)}"


def _reader(src: _Source, direct: frozenset[str] | None, path: str) -> str:
    """An expression for the taken-in value at `path` (or MISSING).

    `direct` is the set of top-level fields an exclude list drops (empty: all kept) when
    fields can be read from the record itself (`rec`); None when they are read from the
    taken-in record (`taken`), which is then computed first."""
    parts = split_path(path)
    src_name = "taken" if direct is None else "rec"
    if direct is not None and parts[0] in direct:
        return "MISSING"
    key = src.bind(parts[0], "k")
    if len(parts) == 1:
        return f"{src_name}.get({key}, MISSING)"
    tmp = src.temp()
    rest = src.bind(parts[1:], "p")
    if len(parts) == 2:
        key2 = src.bind(parts[1], "k")
        return (f"({tmp}.get({key2}, MISSING) if type({tmp} := {src_name}.get({key}))"
                f" is dict else get_parts({tmp}, {rest}) if {tmp} is not None else MISSING)")
    return (f"(get_parts({tmp}, {rest}) if ({tmp} := {src_name}.get({key}, MISSING))"
            f" is not MISSING else MISSING)")


def _condition(src: _Source, direct: frozenset[str] | None, node: dict[str, Any]) -> str:
    """A boolean expression: whether the condition holds for the record."""
    op = node["op"]
    value = node.get("value")
    case = bool(node.get("case_sensitive"))
    test = src.bind(_make_test(op, value, case), "t")  # the engine's own test
    read = _reader(src, direct, node["field"])
    v = src.temp()
    # Texts compare after strip and NFC (case-sensitive) or case folding; for ASCII text
    # both are plain string operations (`filters._nfc`, `filters.fold`).
    norm = f"{v}.strip()" if case else f"{v}.strip().lower()"
    if op in ("eq", "ne") and type(value) is str:
        o = _Operand(value, case)
        if o.temporal is None:
            text = src.bind(o.text)
            eq = f"({norm} == {text} if type({v} := {read}) is str and {v}.isascii() " \
                 f"else {test}({v}))"
            return eq if op == "eq" else f"({norm} != {text} if type({v} := {read}) is str " \
                f"and {v}.isascii() else {test}({v}))"
    if op in ("in", "not_in") and isinstance(value, list) and value:
        operands = [_Operand(x, case) for x in value]
        if all(type(o.raw) is str and o.temporal is None for o in operands):
            texts = src.bind(frozenset(o.text for o in operands))
            cmp = "in" if op == "in" else "not in"
            return f"({norm} {cmp} {texts} if type({v} := {read}) is str and {v}.isascii() " \
                   f"else {test}({v}))"
    if op in ("gt", "gte", "lt", "lte") and type(value) is not bool and value is not None:
        o = _Operand(value, case)
        if o.number is not None:
            # An int field against a number: the engine's `_order` compares them as numbers.
            number = src.bind(o.number)
            sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            return f"({v} {sign} {number} if type({v} := {read}) is int else {test}({v}))"
    return f"{test}({read})"


def _tree(src: _Source, direct: frozenset[str] | None, node: dict[str, Any]) -> str:
    if "all" in node:
        children = [_tree(src, direct, c) for c in node["all"]]
        return "(" + " and ".join(children) + ")" if children else "True"
    if "any" in node:
        return "(" + " or ".join(_tree(src, direct, c) for c in node["any"]) + ")"
    if "not" in node:
        return f"(not {_tree(src, direct, node['not'])})"
    return _condition(src, direct, node)


_INLINE_COERCE = {
    "text": "{v} if type({v}) is str else {fn}({v}, {var})",
    "number": "{v} if type({v}) is int and LONG_MIN <= {v} <= LONG_MAX else {fn}({v}, {var})",
    "boolean": "{v} if type({v}) is bool else {fn}({v}, {var})",
    "date": "date_text({v}.strip()) if type({v}) is str else {fn}({v}, {var})",
}


def fast_process(compiled: CompiledAutomation, *, taken_in: bool = True
                 ) -> Callable[[Any], Outcome]:
    """`compiled.process` as one generated function (same verdicts; see the module).

    `taken_in=False`: an Accepted's `taken_in` is left empty, for a caller that does not
    read it (the worker: copying the record without its excluded fields cost ~1 us)."""
    snap = compiled.snapshot
    src = _Source()
    src.ns.update(reference=compiled.process, take_in=compiled.take_in,
                  explain=compiled.filter.explain)
    trie = build_trie(snap.fields_paths)
    direct: frozenset[str] | None = None
    if snap.fields_mode == "exclude" and all(sel is WHOLE for sel in trie.values()):
        direct = frozenset(trie)  # the usual exclude list: read the record itself
    lines = ["def process(rec):",
             "    if type(rec) is not dict:",
             "        return reference(rec)"]
    if direct is None:
        lines.append("    taken = take_in(rec)")
    tree = snap.filters
    if tree:
        lines += [f"    if not {_tree(src, direct, tree)}:",
                  "        return FilteredOut(explain(take_in(rec), with_values=False) or '')"]
    email = src.temp()
    lines += [f"    {email} = {_reader(src, direct, snap.email_field)}",
              f"    if type({email}) is not str:",
              "        return reference(rec)",
              "    try:",
              f"        email = normalize_email({email})",
              "    except ValueError:",
              "        return reference(rec)",
              "    variables = {}",
              "    try:"]
    seen: set[str] = set()
    for field, _parts, var, _key, fn in compiled._plan:
        indent = "        "
        name = src.bind(var.name, "n")
        if var.name in seen:  # a later entry for the same variable: the first present wins
            lines.append(f"{indent}if {name} not in variables:")
            indent += "    "
        seen.add(var.name)
        v = src.temp()
        lines += [f"{indent}{v} = {_reader(src, direct, field)}",
                  f"{indent}if {v} is not MISSING and {v} is not None:"]
        if fn is None:
            lines.append(f"{indent}    return reference(rec)")  # unknown type: its error
            continue
        template = _INLINE_COERCE.get(var.type, "{fn}({v}, {var})")
        expr = template.format(v=v, fn=src.bind(fn, "f"), var=src.bind(var, "var"))
        lines.append(f"{indent}    variables[{name}] = {expr}")
    lines += ["        pass",
              "    except (Unfit, CoercionError):",
              "        return reference(rec)",
              f"    return Accepted(email, variables, {'take_in(rec)' if direct else 'taken'})"]
    if direct is not None and not direct:
        lines[-1] = "    return Accepted(email, variables, rec)"  # nothing left out
    if not taken_in:
        lines[-1] = "    return Accepted(email, variables, {})"
    code = "\n".join(lines)
    exec(compile(code, f"<automation {snap.id!r} v{snap.version}>", "exec"), src.ns)  # noqa: S102
    process: Callable[[Any], Outcome] = src.ns["process"]
    process.source = code  # type: ignore[attr-defined]  # for a failing parity test's report
    return process

