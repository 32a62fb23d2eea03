"""The generated function of an automation (`automations.fastpath`) against the engine it
stands beside: the same verdict for any automation the control plane would save and any
record, variables in the same order (the Avro map's order follows them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automations.engine import Accepted, CompiledAutomation, compile_automation
from automations.fastpath import fast_process
from automations.filters import validate_filter
from automations.snapshot import AutomationSnapshot, FieldMapping, MessageTemplate, Variable

FIELDS = ["email", "country", "age", "name", "plan", "joined", "customer", "customer.city",
          "customer.email", "items", "items.0", "items.1.sku", "a.b.c", "secret"]
_texts = st.sampled_from(["", " ", "NL", "nl", " Nl ", "NÉ", "ne\u0301", "Straße", "STRASSE",
                          "42", " 42 ", "3,5", "1e3", "2024-02-29", "2024-02-29T23:30+01:00",
                          "05-03-2024", "true", "Ja", "pro", "basic", "Pro ", "a@b.co",
                          " Jan@Example.NL ", "jan@example", "x@y@z", "\u00a0pro", "ß"])
# Small pools, so that conditions meet equal values (the boundaries of gte, eq, in).
_numbers = st.integers(16, 19) | st.sampled_from([16.0, 18.0, 18.5, -0.0])
_scalars = (st.none() | st.booleans() | _numbers | st.integers(-2**65, 2**65)
            | st.floats(allow_nan=True) | _texts | st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["city", "email", "sku", "b", "c"]),
                                         inner, max_size=3), max_leaves=12)
_emails = st.sampled_from(["a@b.co", " Jan@Example.NL ", "x.y@sub.example.org"])
# Mostly a valid address (so that records get through to the mapping), sometimes anything.
_records = st.builds(lambda extra, email, customer, country, age, plan: {
    **extra, "email": email, "customer": customer, "country": country, "age": age,
    "plan": plan},
                     st.dictionaries(st.sampled_from(FIELDS), _scalars | _values, max_size=7),
                     _emails | _emails | _scalars,
                     st.fixed_dictionaries({"email": _emails, "city": _texts}) | _values,
                     _texts | _scalars, _numbers | _scalars, _texts | _scalars)

_ops = ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "starts_with", "ends_with", "in",
        "not_in", "exists", "not_exists", "empty", "not_empty", "regex"]
_operand = st.none() | st.booleans() | _numbers | st.floats(-10, 100) | _texts


def _condition(field: str, op: str, value: Any, values: list[Any], case: bool | None
               ) -> dict[str, Any]:
    node: dict[str, Any] = {"field": field, "op": op}
    if op in ("in", "not_in"):
        node["value"] = values
    elif op == "regex":
        node["value"] = "^[a-z]+$" if isinstance(value, bool) else "(?i)n"
    elif op not in ("exists", "not_exists", "empty", "not_empty"):
        node["value"] = value
    if case is not None:
        node["case_sensitive"] = case
    return node


# Mostly the operators that have a fast path, on fields every record has (below).
_fast_ops = st.sampled_from(["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte"])
_conditions = st.builds(_condition, st.sampled_from(["country", "age", "plan", "customer.city"])
                        | st.sampled_from(FIELDS), _fast_ops | _fast_ops | st.sampled_from(_ops),
                        _operand,
                        st.lists(_operand, min_size=1, max_size=4)
                        | st.lists(_texts, min_size=1, max_size=4),
                        st.none() | st.booleans()).map(
    # One the control plane would refuse (a list holding a list...) becomes an `exists`.
    lambda c: c if not validate_filter(c) else {"field": c["field"], "op": "exists"})
_trees = st.recursive(
    _conditions,
    lambda inner: st.builds(lambda cs: {"all": cs}, st.lists(inner, max_size=3))
    | st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3))
    | st.builds(lambda c: {"not": c}, inner), max_leaves=6)
# Only trees the control plane would save (it refuses the others with their problems).
_filters = (st.none() | st.just({}) | _trees | _trees | _trees | _trees).filter(
    lambda tree: not validate_filter(tree))

VARIABLES = (Variable("name", "text"), Variable("age", "number"), Variable("member", "boolean"),
             Variable("born", "date"), Variable("size", "choice", options=("S", "M", "L")),
             Variable("mail", "email"), Variable("odd", "weird"))  # type: ignore[arg-type]
_mappings = st.lists(st.builds(FieldMapping, st.sampled_from(FIELDS), st.none()
                               | st.sampled_from([v.name for v in VARIABLES] + ["unknown"])),
                     max_size=5)
_take_in = st.one_of(
    st.tuples(st.just("exclude"), st.lists(st.sampled_from(["secret", "plan", "items"]),
                                           max_size=2)),
    st.tuples(st.just("exclude"), st.lists(st.sampled_from(FIELDS), max_size=3)),
    st.tuples(st.just("include"), st.lists(st.sampled_from(FIELDS), max_size=5)))


def snapshot(filters: Any, mapping: list[FieldMapping], take_in: tuple[str, list[str]],
             email_field: str) -> AutomationSnapshot:
    return AutomationSnapshot(
        id="fast", version=1, name="Fast", survey_id="s", survey_name="S", enabled=True,
        message=MessageTemplate("m", "Invite", "Hi", "Hi"), variables=VARIABLES,
        email_field=email_field, fields_mode=take_in[0],  # type: ignore[arg-type]
        fields_paths=tuple(take_in[1]), filters=filters, mapping=tuple(mapping), delay_days=0,
        error_notifications_enabled=False, error_recipients=(), api_keys=(),
        updated_at=datetime.now(UTC))


def same(compiled: CompiledAutomation, record: Any) -> None:
    fast = fast_process(compiled)
    expected, got = compiled.process(record), fast(record)
    source = fast.source  # type: ignore[attr-defined]
    assert got == expected, (record, source)
    lean = fast_process(compiled, taken_in=False)(record)
    if type(expected) is Accepted:
        assert type(lean) is Accepted and lean.taken_in == {}, source
        assert (lean.email, lean.variables) == (expected.email, expected.variables), source
    else:
        assert lean == expected, source
    if type(expected) is Accepted:
        assert type(got) is Accepted
        assert list(got.variables.items()) == list(expected.variables.items()), source
        assert [type(v) for v in got.variables.values()] == \
            [type(v) for v in expected.variables.values()], source


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_filters, _mappings, _take_in, st.sampled_from(["email", "customer.email", "items.0"]),
       st.lists(_records, min_size=1, max_size=5))
def test_generated_function_matches_the_engine(filters: Any, mapping: list[FieldMapping],
                                               take_in: tuple[str, list[str]], email_field: str,
                                               records: list[dict[str, Any]]) -> None:
    compiled = compile_automation(snapshot(filters, mapping, take_in, email_field))
    for record in records:
        same(compiled, record)


def test_generated_function_on_a_plain_accepted_record() -> None:
    """The usual case takes the generated path (not the reference) and agrees with it."""
    snap = snapshot({"all": [{"field": "country", "op": "eq", "value": "NL"},
                             {"field": "age", "op": "gte", "value": 18},
                             {"field": "plan", "op": "in", "value": ["pro", "basic"]}]},
                    [FieldMapping("name", "name"), FieldMapping("age", "age"),
                     FieldMapping("customer.city", "name"), FieldMapping("joined", "born")],
                    ("exclude", ["secret"]), "email")
    compiled = compile_automation(snap)
    record = {"email": " Jan@Example.NL ", "country": "nl ", "age": 30, "plan": "Pro",
              "name": "Jan", "joined": "05-03-2024", "customer": {"city": "Utrecht"},
              "secret": 1}
    out = fast_process(compiled)(record)
    assert out == Accepted("Jan@example.nl", {"name": "Jan", "age": 30, "born": "2024-03-05"},
                           {k: v for k, v in record.items() if k != "secret"})
    same(compiled, record)
    for changed in ({"age": 17}, {"country": "BE"}, {"email": "x"}, {"age": "x"}, {"age": None}):
        same(compiled, {**record, **changed})


# Few values, so that a condition's operand and a record's value often meet (equal, or
# equal but for case or spaces, or numbers at the boundary).
_few = st.sampled_from(["NL", "nl", " Nl ", "NÉ", "né", "ß", "SS", "42", "2024-02-29"])
_plain = _few | _numbers | _few | _numbers | st.none() | st.booleans()
_fast_conditions = st.builds(
    _condition, st.sampled_from(["country", "age", "plan", "customer.city"]), _fast_ops,
    _few | _numbers, st.lists(_few, min_size=1, max_size=3), st.none() | st.booleans())
_fast_trees = st.recursive(
    _fast_conditions,
    lambda inner: st.builds(lambda cs: {"all": cs}, st.lists(inner, max_size=3))
    | st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3))
    | st.builds(lambda c: {"not": c}, inner), max_leaves=4)
_filtered_records = st.builds(
    lambda country, age, plan, city: {"email": "a@b.co", "country": country, "age": age,
                                      "plan": plan, "customer": {"city": city}},
    _plain, _plain, _plain, _plain)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_fast_trees.filter(lambda tree: not validate_filter(tree)),
       st.lists(_filtered_records, min_size=1, max_size=8))
def test_generated_filters_decide_as_the_engine(filters: Any,
                                                records: list[dict[str, Any]]) -> None:
    """Filters alone (a valid address, nothing mapped): every record is either accepted or
    filtered out, so any condition the generated code decides otherwise shows."""
    compiled = compile_automation(snapshot(filters, [], ("exclude", ["secret"]), "email"))
    for record in records:
        same(compiled, record)
