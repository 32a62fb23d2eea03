"""Message placeholders: plain substitution, never code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from automations.templates import SURVEY_LINK, header_safe, placeholders, render


def test_placeholders_with_and_without_spaces() -> None:
    text = "Hi {{name}}, {{ city }} {{  survey_link  }} {{ name }} { single } {{}} {{ a b }}"
    assert placeholders(text) == {"name", "city", "survey_link"}
    assert SURVEY_LINK == "survey_link"


def test_render_substitutes_and_leaves_absent_empty() -> None:
    text = "Beste {{ name }}, uit {{city}}: {{ survey_link }}{{ unknown }}."
    out = render(text, {"name": "Jan", "city": "Utrecht", SURVEY_LINK: "https://s/x"})
    assert out == "Beste Jan, uit Utrecht: https://s/x."
    assert render("{{ a }}|{{ b }}|{{ c }}", {"a": None, "b": True, "c": 3.5}) == "|true|3.5"


@pytest.mark.parametrize("template", [
    "{{ name.__class__ }}", "{{ 7*7 }}", "{% for x in y %}x{% endfor %}",
    "{{ name|upper }}", "{{ lipsum.__globals__ }}",
])
def test_nothing_is_executed(template: str) -> None:
    out = render(template, {"name": "jan"})
    assert "49" not in out
    assert "JAN" not in out
    assert "class" not in out or template == out  # left as text or blanked, never evaluated


def test_values_are_not_rendered_again() -> None:
    assert render("{{ a }}", {"a": "{{ b }}", "b": "secret"}) == "{{ b }}"


def test_html_escapes_values_only() -> None:
    out = render("<p>{{ name }}</p><a href=\"{{ survey_link }}\">go</a>",
                 {"name": "<script>alert(1)</script>", SURVEY_LINK: "https://s/?a=1&b=\"2\""},
                 html=True)
    assert out == ("<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
                   "<a href=\"https://s/?a=1&amp;b=&quot;2&quot;\">go</a>")
    assert render("{{ x }}", {"x": "<b>"}) == "<b>"


def test_header_safe() -> None:
    assert header_safe("Hi\r\nBcc: evil@example.com") == "Hi Bcc: evil@example.com"
    assert header_safe(" a\u2028b\x00c\n") == "a b c"
    assert header_safe("Gewoon een onderwerp") == "Gewoon een onderwerp"


_names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
_plain = st.text(st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)),
                 max_size=10)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_plain, _names, st.sampled_from(["{{%s}}", "{{ %s }}", "{{  %s\t}}"])),
                max_size=5), _plain, st.data())
def test_render_leaves_no_known_placeholder(parts: list[tuple[str, str, str]], tail: str,
                                            data: st.DataObject) -> None:
    text = "".join(before + form % name for before, name, form in parts) + tail
    names = placeholders(text)
    assert names == {name for _, name, _ in parts}
    values = {n: data.draw(_plain) for n in names}
    out = render(text, values)
    assert not placeholders(out) & names
    assert "{{" not in out
    escaped = render(text, values, html=True)
    assert not placeholders(escaped) & names


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_header_safe_never_has_line_breaks(text: str) -> None:
    out = header_safe(text)
    assert "\r" not in out and "\n" not in out
