"""The filter language: conditions the incoming data must meet for an automation to act.

A filter is a tree. A group is `{"all": [...]}` (every child holds; an empty list holds),
`{"any": [...]}` (at least one child holds; it must not be empty) or `{"not": node}`.
A condition is `{"field": "customer.city", "op": "eq", "value": "Utrecht"}` with an
optional `"case_sensitive": true`. A missing tree (None) or `{}` always passes.

Fields are dotted paths (see `paths.py`), read from the fields the automation takes in.

How values compare (what a person writing a filter expects):
- Text compares *case-insensitively* (Unicode case folding after NFC normalisation, so `É`,
  `é` and `e` + combining accent agree, and `ß` equals `ss`), unless the condition has
  `"case_sensitive": true`. `eq`/`ne`/`in`/`not_in` ignore spaces around the field's text.
  `regex` is always as written (a search, case-sensitive; write `(?i)` to ignore case). It
  runs on RE2, a linear-time engine: no pattern and no value can make it backtrack for
  long (`(a+)+$` on any text is as quick as `a+$`). RE2's syntax is Python's without
  backreferences (a backslash and a digit, `(?P=name)`) and lookaround (`(?=`, `(?!`,
  `(?<=`, `(?<!`); a pattern using them is refused when the automation is saved. The
  classes for digits, word characters and spaces are ASCII-only on RE2.
- Numbers: when the condition's value or the field is a JSON number, a text such as `"42"`
  or `"3.5"` on the other side compares as that number (`"42" eq 42`). `gt`/`gte`/`lt`/`lte`
  compare as numbers whenever both sides read as numbers (`"10" gt "9"`). `eq` between two
  texts compares text, so postcodes like `"01234"` keep their leading zero. true/false are
  not numbers.
- Dates: when both sides are ISO dates (`2024-03-05`) or date-times
  (`2024-03-05T10:00:00+01:00`; no offset means UTC) they compare as dates. A date-only side
  compares with a date-time by the calendar day the date-time states (`2024-03-05T23:30+01:00`
  is on `2024-03-05`).
- Ordering (`gt`...) between two other texts is by Unicode order after case folding; a
  number against a non-numeric text, or anything against true/false, null, an object or an
  array, never holds.
- A boolean value matches JSON true/false and the texts "true"/"false" (any case).
- `contains` on a text tests for a substring; on an array, for an element equal to the
  value. `starts_with`/`ends_with`/`regex` apply to texts (and numbers, as written in JSON).
- `in`/`not_in` take a non-empty list; on an array field `in` holds when any element is in it.

Missing fields and null (a missing field is not null):
- `exists` holds when the field is present, even when it is null; `not_exists` is its inverse.
- `empty` holds for missing, null, a text of only spaces, `[]` and `{}`; `not_empty` is its
  inverse. Numbers and booleans are never empty.
- `ne` is exactly `not eq`, and `not_in` exactly `not in`: both hold for a missing field.
- `eq null` holds only for a present null. Every other operator fails on a missing field.

`compile_filter(tree)` checks records fast (`.test(record) -> bool`); calling the compiled
filter returns a `FilterVerdict` whose `failed` says which condition failed and why, with the
field's value (for the dry run), and `failed_redacted` says the same without any value from the
record (for logs, errors and e-mails).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Final

import re2

from automations.kinds import json_kind as _kind
from automations.paths import MISSING, get_parts, path_problem, split_path
from automations.problems import Problem

OPERATORS: Final[tuple[str, ...]] = (
    "eq", "ne", "in", "not_in", "contains", "starts_with", "ends_with", "regex",
    "gt", "gte", "lt", "lte", "exists", "not_exists", "empty", "not_empty",
)
_NO_VALUE_OPS: Final = frozenset({"exists", "not_exists", "empty", "not_empty"})
_TYPED_OPS: Final = frozenset({"eq", "ne", "gt", "gte", "lt", "lte"})
_CONDITION_KEYS: Final = frozenset({"field", "op", "value", "case_sensitive"})
MAX_DEPTH: Final = 32
MAX_REGEX_LENGTH: Final = 1000
# Syntax Python's engine takes and RE2 (linear time) does not: named to the person saving.
_BACKTRACKING_ONLY: Final = re.compile(
    r"\\[1-9]|\(\?P=|\(\?=|\(\?!|\(\?<=|\(\?<!|\\g<|\(\?\(|\(\?>|[*+?}]\+")


REGEX_UNSUPPORTED: Final = "regex_unsupported"  # the problem code of such a pattern
_UNSUPPORTED_PREFIX: Final = "the regular expression uses syntax the linear-time engine"


def compile_regex(pattern: str) -> Any:
    """`pattern` on RE2 (linear-time matching). Raises `re2.error`; the reason is given to
    the caller, not written to stderr by RE2 itself."""
    return re2.compile(pattern, _RE2_OPTIONS)


_RE2_OPTIONS: Final = re2.Options()
_RE2_OPTIONS.log_errors = False
_UNANCHORED: Final = getattr(getattr(re2, "_Anchor", None), "UNANCHORED", None)


def regex_search(pattern: Any) -> Callable[[str], bool]:
    """Whether a compiled pattern occurs in a text: RE2's matcher run on the UTF-8 text as
    is. The wrapper's `search` builds a match object and maps byte offsets back to
    characters, three times the cost of the match itself (bench-streams); a yes/no needs
    neither. Lone surrogates (never valid text) pass as bytes, not as an error."""
    regexp = getattr(pattern, "_regexp", None)
    if regexp is None or _UNANCHORED is None:  # another layout of google-re2: its public API
        return lambda text: pattern.search(text) is not None
    match = regexp.Match

    def search(text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return match(_UNANCHORED, data, 0, len(data))[0][0] >= 0
    return search


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be a filter's regular expression (None: it can)."""
    try:
        compile_regex(pattern)
    except re2.error as error:
        raw = error.args[0] if error.args else ""
        exc = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if _BACKTRACKING_ONLY.search(pattern):
            return ("the regular expression uses syntax the linear-time engine (RE2) does "
                    "not support: backreferences (\\1, (?P=name)), lookahead or lookbehind "
                    "((?=, (?!, (?<=, (?<!), conditionals, atomic groups or possessive "
                    f"quantifiers ({exc})")
        return f"the regular expression does not compile: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class FilterVerdict:
    passed: bool
    failed: str | None = None  # which condition failed and why, with the record's value
    failed_redacted: str | None = None  # the same without any value from the record


PASSED: Final = FilterVerdict(True)


class FilterError(ValueError):
    """`compile_filter` got a tree that `validate_filter` rejects."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in problems))


# --- validation ----------------------------------------------------------------------------

def _is_scalar(v: object) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return v is None or isinstance(v, str | int | bool)


def _is_number(v: object) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and math.isfinite(v))


def validate_filter(tree: Any, prefix: str = "filters") -> list[Problem]:
    """Every problem in a filter tree, each with its path (`filters.all[1].op`) and a reason."""
    problems: list[Problem] = []
    if tree is None or tree == {}:
        return problems
    _validate(tree, prefix, 0, problems)
    return problems


def _validate(node: Any, path: str, depth: int, out: list[Problem]) -> None:
    if depth > MAX_DEPTH:
        out.append(Problem(path, f"filters nest deeper than {MAX_DEPTH} levels"))
        return
    if not isinstance(node, dict):
        out.append(Problem(path, "must be an object: a condition {field, op, value} or "
                                       "a group {all: [...]}, {any: [...]} or {not: ...}, not "
                                       f"{_kind(node)}"))
        return
    groups = [k for k in ("all", "any", "not") if k in node]
    if groups:
        if len(node) != 1:
            others = ", ".join(sorted(str(k) for k in node if k != groups[0]))
            out.append(Problem(path, f"a group has exactly one key ('all', 'any' or "
                                           f"'not'); found also: {others}"))
            return
        key = groups[0]
        sub = node[key]
        if key == "not":
            _validate(sub, f"{path}.not", depth + 1, out)
            return
        if not isinstance(sub, list):
            out.append(Problem(f"{path}.{key}", f"must be a list of conditions or "
                                                      f"groups, not {_kind(sub)}"))
            return
        if key == "any" and not sub:
            out.append(Problem(f"{path}.any", "an empty 'any' never holds; give at least "
                                                    "one condition"))
        for i, child in enumerate(sub):
            _validate(child, f"{path}.{key}[{i}]", depth + 1, out)
        return
    if "field" not in node and "op" not in node:
        out.append(Problem(path, "is neither a condition (field, op, value) nor a group "
                                       "(all, any, not)"))
        return
    _validate_condition(node, path, out)


def _validate_condition(node: dict[str, Any], path: str, out: list[Problem]) -> None:
    for key in node:
        if key not in _CONDITION_KEYS:
            out.append(Problem(f"{path}.{key}", "unknown key in a condition; a condition "
                                                      "has field, op, value and optionally "
                                                      "case_sensitive"))
    if "field" not in node:
        out.append(Problem(f"{path}.field", "is required"))
    else:
        reason = path_problem(node["field"])
        if reason:
            out.append(Problem(f"{path}.field", reason))
    if "case_sensitive" in node and not isinstance(node["case_sensitive"], bool):
        out.append(Problem(f"{path}.case_sensitive", "must be true or false"))
    op = node.get("op")
    if "op" not in node:
        out.append(Problem(f"{path}.op", "is required"))
        return
    if not isinstance(op, str) or op not in OPERATORS:
        shown = op if isinstance(op, str) else _kind(op)
        out.append(Problem(f"{path}.op", f"unknown operator '{shown}'; use one of "
                                               f"{', '.join(OPERATORS)}"))
        return
    vpath = f"{path}.value"
    has_value = "value" in node
    value = node.get("value")
    if op in _NO_VALUE_OPS:
        if value is not None:
            out.append(Problem(vpath, f"'{op}' takes no value"))
        return
    if not has_value:
        out.append(Problem(vpath, f"is required for '{op}'"))
        return
    reason = _value_problem(op, value)
    if reason:
        # A pattern only a backtracking engine runs gets a code of its own: not a typo, a
        # rewrite (without backreferences or lookaround) is needed.
        out.append(Problem(vpath, reason, REGEX_UNSUPPORTED if reason.startswith(
            _UNSUPPORTED_PREFIX) else "invalid"))


def _value_problem(op: str, value: Any) -> str | None:
    if op in ("eq", "ne"):
        if not _is_scalar(value):
            return (f"'{op}' compares with one value (a text, number, true/false or null), not "
                    f"{_kind(value)}; to compare with several values use 'in'")
    elif op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return f"'{op}' needs a non-empty list of values, not {_kind(value)}"
        for i, v in enumerate(value):
            if not _is_scalar(v):
                return (f"'{op}' needs a list of single values (texts, numbers, true/false, "
                        f"null); item {i} is {_kind(value[i])}")
    elif op == "contains":
        if value is None or not _is_scalar(value) or isinstance(value, bool):
            return f"'contains' needs a text or a number, not {_kind(value)}"
    elif op in ("starts_with", "ends_with"):
        if not (isinstance(value, str) and value) and not _is_number(value):
            return f"'{op}' needs a non-empty text, not {_kind(value)}"
    elif op == "regex":
        if not isinstance(value, str) or not value:
            return f"'regex' needs a regular expression as a non-empty text, not {_kind(value)}"
        if len(value) > MAX_REGEX_LENGTH:
            return f"the regular expression is longer than {MAX_REGEX_LENGTH} characters"
        problem = regex_problem(value)
        if problem is not None:
            return problem
    elif op in ("gt", "gte", "lt", "lte"):
        if not _is_number(value) and not (isinstance(value, str) and value.strip()):
            shown = "an empty text" if isinstance(value, str) else _kind(value)
            return f"'{op}' needs a number, a date or a non-empty text, not {shown}"
    return None


# --- value semantics -----------------------------------------------------------------------

_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT_RE: Final = re.compile(r"[+-]?\d+")
_DATE_PREFIX_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def as_number(v: Any) -> int | float | None:
    """A JSON number, or a text that reads as one (`" 42 "`, `"-3.5"`, `"1e3"`); else None."""
    t = type(v)
    if t is int:
        return v  # type: ignore[no-any-return]
    if t is float:
        return v if math.isfinite(v) else None  # type: ignore[no-any-return]
    if t is str:
        s = v.strip()
        if len(s) <= 100 and _NUMBER_RE.fullmatch(s):
            if _INT_RE.fullmatch(s):
                return int(s)
            f = float(s)
            return f if math.isfinite(f) else None
    return None


def as_temporal(v: Any) -> date | datetime | None:
    """An ISO date (date) or date-time (aware datetime; no offset means UTC); else None."""
    if type(v) is not str:
        return None
    s = v.strip()
    if len(s) < 10 or len(s) > 40 or not _DATE_PREFIX_RE.match(s):
        return None
    try:
        if len(s) == 10:
            return date.fromisoformat(s)
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _cmp_temporal(a: date | datetime, b: date | datetime) -> int:
    if type(a) is date or type(b) is date:  # date granularity: the day the date-time states
        da = a.date() if isinstance(a, datetime) else a
        db = b.date() if isinstance(b, datetime) else b
        return (da > db) - (da < db)
    return (a > b) - (a < b)  # type: ignore[operator]


def fold(s: str) -> str:
    """Text as compared case-insensitively: NFC, then Unicode case folding."""
    if s.isascii():
        return s.lower()
    return unicodedata.normalize("NFC", s).casefold()


def _nfc(s: str) -> str:
    return s if s.isascii() else unicodedata.normalize("NFC", s)


_BOOL_TEXT: Final = {"true": True, "false": False}


def _scalar_text(v: Any) -> str | None:
    """Text for the text operators: texts as they are, numbers as written in JSON."""
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if t is int or t is float:
        return json.dumps(v)
    return None


class _Operand:
    """A condition value with its readings precomputed once at compile time."""

    __slots__ = ("raw", "text", "number", "temporal", "boolean", "is_real_number")

    def __init__(self, raw: Any, case_sensitive: bool) -> None:
        self.raw = raw
        norm = _nfc if case_sensitive else fold
        self.text = norm(raw.strip()) if type(raw) is str else None
        self.number = as_number(raw) if type(raw) is not bool else None
        self.is_real_number = type(raw) in (int, float)
        self.temporal = as_temporal(raw)
        self.boolean = raw if type(raw) is bool else None


def _equals(v: Any, o: _Operand, norm: Callable[[str], str]) -> bool:
    raw = o.raw
    if raw is None:
        return v is None
    tv = type(v)
    if o.boolean is not None:
        if tv is bool:
            return v is o.boolean  # type: ignore[no-any-return]
        if tv is str:
            return _BOOL_TEXT.get(v.strip().lower()) is o.boolean
        return False
    if tv is bool or v is None:
        return False
    if o.is_real_number:
        n = as_number(v)
        return n is not None and n == o.number
    if tv is str:
        if o.temporal is not None:
            t = as_temporal(v)
            if t is not None:
                return _cmp_temporal(t, o.temporal) == 0
        return norm(v.strip()) == o.text
    if tv is int or tv is float:
        return o.number is not None and v == o.number
    return False


def _order(v: Any, o: _Operand, norm: Callable[[str], str]) -> int | None:
    """-1/0/1 comparing the field's value with the operand, or None when incomparable."""
    tv = type(v)
    if tv is bool or v is None or o.boolean is not None or o.raw is None:
        return None
    if o.number is not None:
        n = as_number(v)
        if n is not None:
            return (n > o.number) - (n < o.number)
        if o.is_real_number:
            return None
    if tv is not str:
        return None
    if o.temporal is not None:
        t = as_temporal(v)
        if t is not None:
            return _cmp_temporal(t, o.temporal)
    if o.text is None:
        return None
    s = norm(v.strip())
    return (s > o.text) - (s < o.text)


def _is_empty(v: Any) -> bool:
    if v is MISSING or v is None:
        return True
    t = type(v)
    if t is str:
        return not v.strip()
    if t is list or t is dict:
        return not v
    return False


Test = Callable[[Any], bool]  # field value (or MISSING) -> holds


def _make_test(op: str, value: Any, case_sensitive: bool) -> Test:
    norm: Callable[[str], str] = _nfc if case_sensitive else fold
    if op == "exists":
        return lambda v: v is not MISSING
    if op == "not_exists":
        return lambda v: v is MISSING
    if op == "empty":
        return _is_empty
    if op == "not_empty":
        return lambda v: not _is_empty(v)
    if op in ("eq", "ne"):
        o = _Operand(value, case_sensitive)

        def eq(v: Any) -> bool:
            return v is not MISSING and _equals(v, o, norm)
        return eq if op == "eq" else (lambda v: not eq(v))
    if op in ("in", "not_in"):
        operands = [_Operand(x, case_sensitive) for x in value]
        # A list of plain texts (no date among them): a text value equals one of them exactly
        # when its normalised form is in their set (what `_equals` does for a text against a
        # text operand), one hash lookup instead of a generator over the operands.
        texts = frozenset(o.text for o in operands) if all(
            type(o.raw) is str and o.temporal is None for o in operands) else None

        def is_in(v: Any) -> bool:
            if v is MISSING:
                return False
            if texts is not None and type(v) is str:
                return norm(v.strip()) in texts
            return is_in_reference(v)

        def is_in_reference(v: Any) -> bool:
            if v is MISSING:
                return False
            items = v if type(v) is list else (v,)
            return any(_equals(x, o, norm) for x in items for o in operands)
        is_in.reference = is_in_reference  # type: ignore[attr-defined]  # the parity test
        return is_in if op == "in" else (lambda v: not is_in(v))
    if op == "contains":
        o = _Operand(value, case_sensitive)
        needle = norm(_scalar_text(value) or "")

        def contains(v: Any) -> bool:
            if type(v) is list:
                return any(_equals(x, o, norm) for x in v)
            s = _scalar_text(v)
            return s is not None and needle in norm(s)
        return contains
    if op in ("starts_with", "ends_with"):
        affix = norm(_scalar_text(value) or "")
        starts = op == "starts_with"

        def affixed(v: Any) -> bool:
            s = _scalar_text(v)
            if s is None:
                return False
            s = norm(s)
            return s.startswith(affix) if starts else s.endswith(affix)
        return affixed
    if op == "regex":
        # RE2: linear in the value's length, whatever the pattern.
        search = regex_search(compile_regex(value))

        def matches(v: Any) -> bool:
            s = _scalar_text(v)
            return s is not None and search(s)
        return matches
    if op in ("gt", "gte", "lt", "lte"):
        o = _Operand(value, case_sensitive)
        accept = {"gt": (1,), "gte": (1, 0), "lt": (-1,), "lte": (-1, 0)}[op]

        def ordered(v: Any) -> bool:
            if v is MISSING:
                return False
            c = _order(v, o, norm)
            return c is not None and c in accept
        return ordered
    raise ValueError(f"unknown operator {op!r}")  # validate_filter rules this out


# --- compiled tree -------------------------------------------------------------------------

def show(v: Any, limit: int = 80) -> str:
    """A short, readable rendering of a value: 'text' in quotes, others as JSON."""
    if v is MISSING:
        return "missing"
    text = repr(v) if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Node:
    __slots__ = ("test", "describe")
    test: Callable[[Any], bool]  # record -> holds
    describe: str  # the node in words, without record values

    def explain(self, record: Any, with_values: bool) -> str:
        raise NotImplementedError


class _Condition(_Node):
    __slots__ = ("field", "parts", "op", "value_test", "_operand")

    def __init__(self, node: dict[str, Any]) -> None:
        self.field: str = node["field"]
        self.parts = split_path(self.field)
        self.op: str = node["op"]
        self.value_test = _make_test(self.op, node.get("value"), bool(node.get("case_sensitive")))
        # For telling a value of the wrong type apart from one that merely does not hold.
        self._operand = (_Operand(node.get("value"), bool(node.get("case_sensitive")))
                         if self.op in _TYPED_OPS else None)
        vt, parts = self.value_test, self.parts
        self.test = lambda record: vt(get_parts(record, parts))
        self.describe = (f"{self.field} {self.op}" if self.op in _NO_VALUE_OPS
                         else f"{self.field} {self.op} {show(node.get('value'))}")

    def value_note(self, record: Any, with_values: bool) -> str | None:
        """What the field holds, in words; without values only missing/null are told."""
        v = get_parts(record, self.parts)
        if v is MISSING:
            return "the field is missing"
        if v is None:
            return "the value is null"
        return f"the value is {show(v)}" if with_values else None

    def why(self, record: Any, with_values: bool) -> str:
        """Why the condition does not hold."""
        note = self.value_note(record, with_values)
        v = get_parts(record, self.parts)
        if note:
            expected = self.expected_type(v)
            return f"{note}, of the wrong type (not {expected})" if expected else note
        if self.op == "not_exists":
            return "the field is present"
        if self.op == "not_empty":
            return "the value is empty"
        if self.op == "empty":
            return "the value is not empty"
        expected = self.expected_type(v)
        if expected:
            return f"wrong type: the value is {_kind(v)}, not {expected}"
        return f"the value ({_kind(v)}) does not meet it"

    def expected_type(self, v: Any) -> str | None:
        """What the condition compares with, when the field's value cannot be compared with it
        at all (a text where a number was compared); None when the types fit."""
        o = self._operand
        if o is None or v is MISSING or v is None or o.raw is None:
            return None
        if o.boolean is not None:
            ok = type(v) is bool or (type(v) is str and v.strip().lower() in _BOOL_TEXT)
            return None if ok else "true/false"
        if self.op in ("eq", "ne"):
            return "a number" if o.is_real_number and as_number(v) is None else None
        if _order(v, o, fold) is not None:
            return None
        if o.number is not None:
            return "a number"
        return "a date" if o.temporal is not None else "a text"

    def explain(self, record: Any, with_values: bool) -> str:
        return f"{self.describe}: {self.why(record, with_values)}"


class _Group(_Node):
    """`all`/`any` of child conditions; subclasses set the label and how tests are joined."""

    __slots__ = ("children",)
    _label: ClassVar[str]

    def __init__(self, children: list[_Node]) -> None:
        self.children = children
        tests = tuple(c.test for c in children)
        self.test = tests[0] if len(tests) == 1 else self._join(tests)
        self.describe = f"{self._label} of (" + "; ".join(c.describe for c in children) + ")"

    @staticmethod
    def _join(tests: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
        raise NotImplementedError


class _All(_Group):
    __slots__ = ()
    _label = "all"

    @staticmethod
    def _join(tests: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
        return lambda record: all(t(record) for t in tests)

    def explain(self, record: Any, with_values: bool) -> str:
        for c in self.children:
            if not c.test(record):
                return c.explain(record, with_values)
        return f"{self.describe}: holds"


class _Any(_Group):
    __slots__ = ()
    _label = "any"

    @staticmethod
    def _join(tests: tuple[Callable[[Any], bool], ...]) -> Callable[[Any], bool]:
        return lambda record: any(t(record) for t in tests)

    def explain(self, record: Any, with_values: bool) -> str:
        if len(self.children) == 1:
            return self.children[0].explain(record, with_values)
        reasons = "; ".join(c.explain(record, with_values) for c in self.children)
        return f"none of the conditions holds: {reasons}"


class _Not(_Node):
    __slots__ = ("child",)

    def __init__(self, child: _Node) -> None:
        self.child = child
        t = child.test
        self.test = lambda record: not t(record)
        self.describe = f"not ({child.describe})"

    def explain(self, record: Any, with_values: bool) -> str:
        if isinstance(self.child, _Condition):
            note = self.child.value_note(record, with_values)
            if note:
                return f"{self.describe}: it holds ({note})"
        return f"{self.describe}: it holds"


def _compile(node: dict[str, Any]) -> _Node:
    if "all" in node:
        return _All([_compile(c) for c in node["all"]])
    if "any" in node:
        return _Any([_compile(c) for c in node["any"]])
    if "not" in node:
        return _Not(_compile(node["not"]))
    return _Condition(node)


class CompiledFilter:
    """A filter ready to check records. `test` is the fast path; calling gives the verdict."""

    __slots__ = ("_root", "test")

    def __init__(self, root: _Node | None) -> None:
        self._root = root
        self.test: Callable[[Any], bool] = root.test if root else (lambda record: True)

    def explain(self, record: Any, *, with_values: bool = True) -> str | None:
        """Which condition fails for `record` and why; None when the filter passes."""
        if self._root is None or self._root.test(record):
            return None
        return self._root.explain(record, with_values)

    def __call__(self, record: Any) -> FilterVerdict:
        if self._root is None or self._root.test(record):
            return PASSED
        return FilterVerdict(False, self._root.explain(record, True),
                             self._root.explain(record, False))


def compile_filter(tree: Any) -> CompiledFilter:
    """Compile a filter tree (regexes compiled once); raises FilterError when it is invalid."""
    problems = validate_filter(tree)
    if problems:
        raise FilterError(problems)
    if tree is None or tree == {}:
        return CompiledFilter(None)
    return CompiledFilter(_compile(tree))
