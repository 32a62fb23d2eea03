"""Type coercion of an incoming value onto a survey's background variable.

`coerce(value, variable)` returns the typed value or raises `CoercionError`, whose message
names the variable and the expected type but never the value (it ends up in error e-mails).
Coercing a coerced value changes nothing. `None` (JSON null) stays `None`: no value.

Per type:
- text: texts as they are; numbers as written in JSON (`42`, `3.5`); true/false as
  "true"/"false". Objects and arrays are not text.
- number: JSON numbers as they are (an int stays an int, a float a float; not NaN/infinity;
  an integer outside the signed 64-bit range and a text that would round to 0 or infinity
  are refused, never rounded);
  texts that read as numbers, spaces around them ignored (`"3"` -> 3, `"3.5"` -> 3.5,
  `"1e3"` -> 1000.0). A decimal comma is accepted because Dutch users write it: `"1,5"` ->
  1.5. A comma followed by exactly three digits (`"1,500"`) is refused as ambiguous (a
  thousands separator in English); thousands separators are never accepted. true/false is
  not a number.
- date: output is the ISO text `YYYY-MM-DD`. Accepted: ISO dates (`2024-03-05`), ISO
  date-times (`2024-03-05T10:00:00+01:00`: the calendar day as written, no time-zone
  conversion), and day-first dates as written in the Netherlands and most of Europe:
  `05-03-2024`, `5-3-2024`, `05/03/2024`, `05.03.2024` (never month-first).
- boolean: true/false; the numbers 1/0; the texts true/false, yes/no, ja/nee, 1/0 (any
  case, spaces around ignored).
- email: one address `local@domain` (no display name); spaces around are removed and the
  domain is lower-cased (the local part is kept as written: servers may treat its case as
  significant). Internationalised domains are accepted if IDNA accepts them.
- choice: one of the variable's options; an exact match first, otherwise a match ignoring
  case and spaces around returns the option as the survey spells it. Numbers match options
  written as that number.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Final

from automations.kinds import json_kind
from automations.snapshot import Variable

EXPECTED: Final[dict[str, str]] = {
    "text": "a text",
    "number": "a number (such as 42 or 3.5)",
    "date": "a date (YYYY-MM-DD, an ISO date-time, or DD-MM-YYYY)",
    "boolean": "true or false (also yes/no, ja/nee, 1/0)",
    "email": "an e-mail address",
    "choice": "one of its options",
}


class CoercionError(ValueError):
    """A value does not fit a variable. The message never contains the value."""

    def __init__(self, variable: str, type_: str, reason: str | None = None) -> None:
        self.variable = variable
        self.type = type_
        self.expected = EXPECTED.get(type_, type_)
        self.reason = reason
        message = f"variable '{variable}' expects {self.expected}"
        super().__init__(f"{message}: {reason}" if reason else message)


class Unfit(Exception):
    """Internal (and the engine's, which calls COERCERS directly): the value does not fit;
    carries an optional value-free reason."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason


def _kind(v: object) -> str:
    return f"got {json_kind(v)}"


# --- text ----------------------------------------------------------------------------------

def _text(v: Any, _: Variable) -> str:
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float and math.isfinite(v):
        return repr(v)
    raise Unfit(_kind(v))


# --- number --------------------------------------------------------------------------------

_INT_RE: Final = re.compile(r"[+-]?\d+")
_FLOAT_RE: Final = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_COMMA_RE: Final = re.compile(r"([+-]?\d+),(\d+)")


_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1
_TOO_BIG: Final = "an integer outside the 64-bit range; send it as a text variable"


def _number(v: Any, _: Variable) -> int | float:
    t = type(v)
    if t is int:
        if not _LONG_MIN <= v <= _LONG_MAX:
            raise Unfit(_TOO_BIG)  # never rounded to a double: a number keeps its value
        return v  # type: ignore[no-any-return]
    if t is float:
        if math.isfinite(v):
            return v  # type: ignore[no-any-return]
        raise Unfit("not a finite number")
    if t is not str:
        raise Unfit(_kind(v))
    s = v.strip()
    if len(s) > 100:
        raise Unfit("the text is too long to be a number")
    if _INT_RE.fullmatch(s):
        n = int(s)
        if not _LONG_MIN <= n <= _LONG_MAX:
            raise Unfit(_TOO_BIG)
        return n
    if _FLOAT_RE.fullmatch(s):
        f = float(s)
        if not math.isfinite(f):
            raise Unfit("not a finite number")
        if f == 0.0 and any(c in "123456789" for c in s.lower().partition("e")[0]):
            raise Unfit("too small to be represented (it would become 0)")
        return f
    m = _COMMA_RE.fullmatch(s)
    if m:
        if len(m.group(2)) == 3:
            raise Unfit("a comma followed by three digits is ambiguous (decimal comma or "
                         "thousands separator); write the number with a decimal point")
        return float(f"{m.group(1)}.{m.group(2)}")
    raise Unfit("the text does not read as a number")


# --- date ----------------------------------------------------------------------------------

_ISO_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")
_DAY_FIRST_RE: Final = re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{4})")


def _date(v: Any, _: Variable) -> str:
    if type(v) is str:
        return _date_text(v.strip())
    if isinstance(v, datetime):
        return v.date().isoformat()
    if isinstance(v, date):
        return v.isoformat()
    raise Unfit(_kind(v))


# Records share their dates (a sign-up day, a birthday): read each text once. Refused texts
# raise and are not cached; the LRU bounds the rest.
@functools.lru_cache(maxsize=4096)
def _date_text(s: str) -> str:
    try:
        if len(s) == 10 and _ISO_DATE_RE.fullmatch(s):
            return date.fromisoformat(s).isoformat()
        if 10 < len(s) <= 40 and _ISO_DATE_RE.match(s) and s[10] in "T t":
            return datetime.fromisoformat(s).date().isoformat()
        m = _DAY_FIRST_RE.fullmatch(s)
        if m:
            return date(int(m.group(4)), int(m.group(3)), int(m.group(1))).isoformat()
    except ValueError as exc:
        raise Unfit("not a valid calendar date") from exc
    raise Unfit("the text does not read as a date")


# --- boolean -------------------------------------------------------------------------------

_BOOLEAN_TEXT: Final = {"true": True, "false": False, "yes": True, "no": False,
                        "ja": True, "nee": False, "1": True, "0": False}


def _boolean(v: Any, _: Variable) -> bool:
    t = type(v)
    if t is bool:
        return v  # type: ignore[no-any-return]
    if t is int and v in (0, 1):
        return bool(v)
    if t is str:
        b = _BOOLEAN_TEXT.get(v.strip().lower())
        if b is not None:
            return b
        raise Unfit("the text is not one of true/false, yes/no, ja/nee, 1/0")
    raise Unfit(_kind(v))


# --- email ---------------------------------------------------------------------------------

_ATOM = r"[\w!#$%&'*+/=?^`{|}~-]+"
_LOCAL_RE: Final = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_email(value: Any) -> str:
    """The normalised address, or ValueError with a reason that does not repeat the value."""
    if type(value) is not str:
        raise ValueError(_kind(value))
    s = value.strip()
    if not s:
        raise ValueError("the address is empty")
    if len(s) > 254:
        raise ValueError("the address is longer than 254 characters")
    if s.count("@") != 1:
        raise ValueError("an address has exactly one @")
    local, domain = s.split("@")
    if not local or len(local) > 64 or not _LOCAL_RE.fullmatch(local):
        raise ValueError("the part before the @ is not valid")
    return f"{local}@{_domain(domain)}"


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> str:
    # Most addresses share a few domains: check each once (a refused one raises, uncached).
    return _check_domain(domain)


def _check_domain(domain: str) -> str:
    """The lower-cased domain, or ValueError."""
    domain = domain.lower()
    if domain.endswith("."):
        raise ValueError("the domain ends with a dot")
    if domain.isascii():
        ascii_domain = domain  # the label check below covers what IDNA would
    else:
        try:
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError("the domain is not valid") from exc
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError("the domain is not valid (like example.com)")
    if labels[-1].isdigit():
        raise ValueError("the domain is not valid (like example.com)")
    return domain


def _email(v: Any, _: Variable) -> str:
    try:
        return normalize_email(v)
    except ValueError as exc:
        raise Unfit(str(exc)) from exc


# --- choice --------------------------------------------------------------------------------

def _choice(v: Any, variable: Variable) -> str:
    t = type(v)
    if t is str:
        s = v
    elif t is int or (t is float and math.isfinite(v)):
        s = str(v)
    else:
        raise Unfit(_kind(v))
    if s in variable.options:
        return s
    folded = s.strip().casefold()
    for option in variable.options:
        if option.strip().casefold() == folded:
            return option
    raise Unfit(f"the options are: {', '.join(variable.options)}" if variable.options
                 else "the variable has no options")


COERCERS: Final[dict[str, Callable[[Any, Variable], Any]]] = {
    "text": _text, "number": _number, "date": _date, "boolean": _boolean,
    "email": _email, "choice": _choice,
}


def coerce(value: Any, variable: Variable) -> Any:
    """`value` as the type of `variable`; None stays None; raises CoercionError."""
    if value is None:
        return None
    fn = COERCERS.get(variable.type)
    if fn is None:
        raise CoercionError(variable.name, variable.type, "unknown variable type")
    try:
        return fn(value, variable)
    except Unfit as exc:
        raise CoercionError(variable.name, variable.type, exc.reason) from None
