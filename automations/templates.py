"""Message placeholders: `{{ name }}` substituted by plain text replacement, never by code.

A placeholder is `{{`, optional spaces, a name without spaces or braces, optional spaces,
`}}`. Nothing else is interpreted: no expressions, filters, loops or attribute access, so a
message (or a respondent's value) cannot run anything. Substitution is a single pass:
a value that itself contains `{{ x }}` is inserted literally and not rendered again.
A placeholder without a value (or with null) renders as empty text. With `html=True` values are
HTML-escaped (the template's own markup is the author's and is kept).
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Mapping
from typing import Any, Final

SURVEY_LINK: Final = "survey_link"

PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*([^\s{}]+)\s*\}\}")
_HEADER_BREAKS: Final = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def placeholders(text: str) -> set[str]:
    """The names of the placeholders in `text`."""
    return set(PLACEHOLDER_RE.findall(text))


def as_text(value: Any) -> str:
    """A value as it appears in a message: true/false as "true"/"false", null as ""."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def render(text: str, values: Mapping[str, Any], *, html: bool = False) -> str:
    """`text` with each `{{ name }}` replaced by `values[name]` (empty when absent)."""
    def substitute(match: re.Match[str]) -> str:
        s = as_text(values.get(match.group(1)))
        return _html.escape(s, quote=True) if html else s

    return PLACEHOLDER_RE.sub(substitute, text)


def header_safe(text: str) -> str:
    """Text fit for a mail header such as the subject: line breaks and other control
    characters become a single space, so a value cannot inject a header."""
    return _HEADER_BREAKS.sub(" ", text).strip()
