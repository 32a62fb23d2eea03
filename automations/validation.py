"""Checks an automation's settings when it is saved (pure: plain values in, problems out).

Use from the control plane::

    from automations.validation import validate_automation

    problems = validate_automation(
        fields_mode="include",                       # "include" | "exclude"
        fields_paths=["email", "customer.city"],     # dotted paths
        filters={"all": [...]} or None,              # the filter tree (filters.py)
        mapping=[{"field": "customer.city", "variable": "city"},   # dicts or FieldMapping;
                 {"field": "customer.id", "variable": None}],      # None: skipped
        email_field="email",
        variables=["city", "age"],                   # the survey's variable names
        subject="Hi {{ name }}", body="... {{ survey_link }}",   # the chosen message, or None
    )
    # -> list[Problem(field, reason)], e.g.
    #    Problem("mapping[0].variable", "the survey has no variable 'cty'; ...")
    # An empty list means valid. Answer 422 with each path and reason.

Paths name the place in the automation request: `fields.mode`, `fields.paths[1]`,
`email_field`, `mapping[2].field`, `mapping[2].variable`, `filters.all[1].op`,
`message_id` (the message's placeholders; change with `message_path`).

The smaller checks (`validate_fields`, `validate_email_field`, `validate_mapping`,
`validate_filters`, `validate_message`) can be called alone, e.g. for a PATCH.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from automations.filters import validate_filter
from automations.paths import is_kept, path_problem
from automations.problems import Problem
from automations.send_window import window_problems
from automations.snapshot import FieldMapping
from automations.templates import SURVEY_LINK, placeholders


def validate_fields(mode: Any, paths: Any) -> list[Problem]:
    """The include/exclude choice."""
    problems: list[Problem] = []
    if mode not in ("include", "exclude"):
        problems.append(Problem("fields.mode", "must be 'include' or 'exclude'"))
    if not isinstance(paths, list | tuple):
        problems.append(Problem("fields.paths", "must be a list of dotted field paths"))
        return problems
    if mode == "include" and not paths:
        problems.append(Problem("fields.paths", "'include' needs at least one field path; to "
                                                "take in every field use 'exclude' with none"))
    for i, path in enumerate(paths):
        reason = path_problem(path)
        if reason:
            problems.append(Problem(f"fields.paths[{i}]", reason))
    return problems


def _usable(mode: Any, paths: Any) -> bool:
    """Whether the fields choice is valid enough to judge which fields it keeps."""
    return (mode in ("include", "exclude") and isinstance(paths, list | tuple)
            and all(path_problem(p) is None for p in paths))


def _dropped(mode: str, paths: Sequence[str]) -> str:
    if mode == "include":
        return "it is not among the included fields"
    return "it is among the excluded fields"


def validate_email_field(email_field: Any, mode: Any, paths: Any) -> list[Problem]:
    """The e-mail field is a valid path among the fields taken in."""
    reason = path_problem(email_field)
    if reason:
        return [Problem("email_field", reason)]
    if _usable(mode, paths) and not is_kept(mode, paths, email_field):
        return [Problem("email_field", f"the e-mail field '{email_field}' is not taken in: "
                                       f"{_dropped(mode, paths)}")]
    return []


def _entry(m: Any) -> tuple[Any, Any]:
    if isinstance(m, FieldMapping):
        return m.field, m.variable
    if isinstance(m, Mapping):
        return m.get("field"), m.get("variable")
    return getattr(m, "field", None), getattr(m, "variable", None)


def validate_mapping(mapping: Any, variables: Iterable[str], mode: Any,
                     paths: Any) -> list[Problem]:
    """Each entry maps a field that is taken in onto a variable the survey has (or skips it);
    no variable gets two fields."""
    if not isinstance(mapping, list | tuple):
        return [Problem("mapping", "must be a list of {field, variable} entries")]
    names = set(variables)
    problems: list[Problem] = []
    mapped: dict[str, int] = {}
    judge_kept = _usable(mode, paths)
    for i, m in enumerate(mapping):
        field, variable = _entry(m)
        reason = path_problem(field)
        if reason:
            problems.append(Problem(f"mapping[{i}].field", reason))
        elif variable is not None and judge_kept and not is_kept(mode, paths, field):
            problems.append(Problem(f"mapping[{i}].field",
                                    f"field '{field}' is mapped but not taken in: "
                                    f"{_dropped(mode, paths)}"))
        if variable is None:
            continue  # skipped: not imported
        if not isinstance(variable, str) or variable not in names:
            shown = variable if isinstance(variable, str) else "(not a name)"
            known = ", ".join(sorted(names)) or "none"
            problems.append(Problem(f"mapping[{i}].variable",
                                    f"the survey has no variable '{shown}'; create the "
                                    f"background variable first (the survey has: {known})"))
        elif variable in mapped:
            problems.append(Problem(f"mapping[{i}].variable",
                                    f"variable '{variable}' is already mapped by "
                                    f"mapping[{mapped[variable]}]; map each variable once"))
        else:
            mapped[variable] = i
    return problems


def _conditions(node: Any, path: str) -> Iterable[tuple[str, Any]]:
    """(path, field) of every condition in a valid filter tree."""
    if not isinstance(node, dict):
        return
    for key in ("all", "any"):
        if key in node:
            for i, child in enumerate(node[key]):
                yield from _conditions(child, f"{path}.{key}[{i}]")
            return
    if "not" in node:
        yield from _conditions(node["not"], f"{path}.not")
    elif "field" in node:
        yield path, node["field"]


def validate_filters(filters: Any, mode: Any, paths: Any) -> list[Problem]:
    """The filter tree is valid, and reads only fields that are taken in (filters see the
    taken-in data)."""
    problems = validate_filter(filters, "filters")
    if problems or filters is None or not _usable(mode, paths):
        return problems
    for path, field in _conditions(filters, "filters"):
        if not is_kept(mode, paths, field):
            problems.append(Problem(f"{path}.field",
                                    f"the filter reads field '{field}', which is not taken in "
                                    f"({_dropped(mode, paths)}); filters see only the fields "
                                    "taken in"))
    return problems


def validate_message(subject: str | None, body: str | None, variables: Iterable[str],
                     message_path: str = "message_id") -> list[Problem]:
    """Every placeholder of the message names a survey variable or `survey_link`."""
    names = set(variables) | {SURVEY_LINK}
    problems: list[Problem] = []
    for part, text in (("subject", subject), ("body", body)):
        for name in sorted(placeholders(text or "") - names):
            problems.append(Problem(message_path,
                                    f"the message's {part} uses the placeholder "
                                    f"{{{{ {name} }}}}, but the survey has no variable "
                                    f"'{name}' (allowed: the survey's variables and "
                                    f"{SURVEY_LINK})"))
    return problems


def validate_automation(*, fields_mode: Any, fields_paths: Any, filters: Any,
                        mapping: Any, email_field: Any, variables: Iterable[str],
                        subject: str | None = None, body: str | None = None,
                        message_path: str = "message_id", throttle_days: Any = 0,
                        send_window: Any = None,
                        variable_types: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem with an automation's settings; an empty list when it can be saved."""
    names = list(variables)
    return [
        *validate_fields(fields_mode, fields_paths),
        *validate_email_field(email_field, fields_mode, fields_paths),
        *validate_filters(filters, fields_mode, fields_paths),
        *validate_mapping(mapping, names, fields_mode, fields_paths),
        *validate_message(subject, body, names, message_path),
        *validate_throttle(throttle_days),
        *validate_send_window(send_window, mapping, variable_types or {}),
    ]


# --- invitation rules (issue 16): throttling and send windows ------------------------------
MAX_THROTTLE_DAYS = 3650
ZONE_VARIABLE_TYPES = ("text", "choice")


def validate_throttle(days: Any) -> list[Problem]:
    """`throttle_days`: whole days from 0 (no limit) to MAX_THROTTLE_DAYS."""
    if isinstance(days, bool) or not isinstance(days, int) or not \
            0 <= days <= MAX_THROTTLE_DAYS:
        return [Problem("throttle_days", f"must be a whole number of days from 0 (no limit) "
                                         f"to {MAX_THROTTLE_DAYS}")]
    return []


def zone_variable(window: Any, mapping: Any) -> str | None:
    """The survey variable the window's `time_zone_field` is mapped onto (None: not mapped)."""
    field = getattr(window, "time_zone_field", None)
    if field is None or not isinstance(mapping, list | tuple):
        return None
    for m in mapping:
        f, variable = _entry(m)
        if f == field and variable is not None:
            return str(variable)
    return None


def validate_send_window(window: Any, mapping: Any,
                         variable_types: Mapping[str, str]) -> list[Problem]:
    """The window's days, times and zone; its respondent zone field, when set, is mapped onto
    a text or choice variable (so the zone travels with the invitation's values)."""
    if window is None:
        return []
    problems = [Problem(f"send_window.{where}", reason)
                for where, reason in window_problems(window)]
    field = getattr(window, "time_zone_field", None)
    if field is not None:
        reason = path_problem(field)
        variable = zone_variable(window, mapping)
        if reason:
            problems.append(Problem("send_window.time_zone_field", reason))
        elif variable is None:
            problems.append(Problem("send_window.time_zone_field",
                                    f"field '{field}' is not mapped onto a survey variable; "
                                    "map it (onto a text variable) to read the respondent's "
                                    "time zone from it"))
        elif variable in variable_types and \
                variable_types[variable] not in ZONE_VARIABLE_TYPES:
            problems.append(Problem("send_window.time_zone_field",
                                    f"field '{field}' is mapped onto '{variable}', a "
                                    f"{variable_types[variable]} variable; a time zone name "
                                    "needs a text or choice variable"))
    return problems
