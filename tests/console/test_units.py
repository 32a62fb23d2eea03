"""The console's pure parts: the filter builder's model, field discovery, the 24-hour count
window, the sample store's bounds, and the session/CSRF signing."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import Response

from automations.filters import validate_filter
from automations.snapshot import Variable
from control_plane.activity import (
    BUCKET_MS,
    DAY_MS,
    SAMPLE_TTL_S,
    SAMPLES_PER_AUTOMATION,
    CountWindow,
    Sample,
    SampleStore,
)
from control_plane.console import filter_form as ff
from control_plane.console.auth import SESSION_COOKIE, ConsoleAuth
from control_plane.console.discovery import discover, value_type

TREES = [
    None,
    {"all": [{"field": "age", "op": "gte", "value": 18}]},
    {"any": [{"field": "country", "op": "in", "value": ["NL", "BE"]},
             {"not": {"field": "email", "op": "ends_with", "value": ".test"}}]},
    {"all": [{"field": "joined", "op": "lt", "value": "2024-01-01"},
             {"field": "member", "op": "eq", "value": True},
             {"field": "note", "op": "empty"},
             {"field": "city", "op": "eq", "value": "Utrecht", "case_sensitive": True},
             {"any": [{"field": "score", "op": "gt", "value": 7.5},
                      {"field": "vip", "op": "eq", "value": None}]}]},
]


@pytest.mark.parametrize("tree", TREES)
def test_filter_json_round_trips_through_the_builder(tree: object) -> None:
    model = ff.from_json(tree)
    assert ff.to_json(model) == tree


@pytest.mark.parametrize("tree", TREES[1:])
def test_filter_round_trips_through_the_posted_form(tree: object) -> None:
    """What the page renders (preorder, parent indices) posts back as the same tree."""
    form: dict[str, str] = {}
    for i, parent, node in ff.flatten_nodes(ff.from_json(tree)):
        form[f"n{i}.kind"] = node["kind"]
        form[f"n{i}.parent"] = "" if parent is None else str(parent)
        if node["kind"] == "cond":
            form.update({f"n{i}.field": node["field"], f"n{i}.op": node["op"],
                         f"n{i}.vtype": node["vtype"], f"n{i}.value": node["value"]})
            if node["case"]:
                form[f"n{i}.case"] = "on"
    assert ff.to_json(ff.from_form(form)) == tree


def test_builder_actions_and_typed_values() -> None:
    root = ff.empty_root()
    ff.apply_action(root, "add-cond:0")
    ff.apply_action(root, "add-group:0:not")
    cond = root["children"][0]
    cond.update(field="age", op="gte", vtype="number", value="18")
    root["children"][1]["children"][0].update(field="country", op="in", vtype="text",
                                              value="NL\nBE\n")
    tree = ff.to_json(root)
    assert tree == {"all": [{"field": "age", "op": "gte", "value": 18},
                            {"not": {"field": "country", "op": "in", "value": ["NL", "BE"]}}]}
    assert validate_filter(tree) == []
    ff.apply_action(root, "remove:1")  # the condition; the group moves up
    assert ff.to_json(root) == {"all": [{"not": {"field": "country", "op": "in",
                                                 "value": ["NL", "BE"]}}]}
    ff.apply_action(root, "remove:0")  # never the root
    assert root["kind"] == "all"


def test_builder_names_what_is_missing_or_malformed() -> None:
    root = {"kind": "all", "children": [
        {"kind": "cond", "field": "", "op": "eq", "vtype": "text", "value": "x"},
        {"kind": "cond", "field": "age", "op": "gt", "vtype": "number", "value": "old"},
        {"kind": "cond", "field": "day", "op": "lt", "vtype": "date", "value": "31-02"},
        {"kind": "cond", "field": "c", "op": "in", "vtype": "text", "value": " \n"}]}
    with pytest.raises(ff.BuildError) as err:
        ff.to_json(root)
    assert err.value.problems == [
        "condition 1: name the field", "condition 2: 'old' is not a number",
        "condition 3: '31-02' is not a date (YYYY-MM-DD)",
        "condition 4: give at least one value, one per line"]


def test_every_operator_offers_value_types_the_engine_accepts() -> None:
    samples = {"text": "x", "number": "3", "date": "2024-01-01", "boolean": "true",
               "null": ""}
    for op in ff.OP_LABELS:
        for vtype in ff.vtypes_for(op) or ["text"]:
            node = {"kind": "all", "children": [
                {"kind": "cond", "field": "f", "op": op, "vtype": vtype,
                 "value": samples[vtype]}]}
            assert validate_filter(ff.to_json(node)) == [], (op, vtype)


def _sample(body: str, n: int = 0, at: int = 10**12) -> Sample:
    return Sample((0, n), at, "application/json", body, False, 200, {})


def test_discovery_types_examples_and_fitting_variables() -> None:
    found = discover([_sample('{"email": "a@x.nl", "age": "42", "member": true, '
                              '"joined": "05-03-2024", "tags": ["a"], "city": "Ede"}'),
                      _sample('[{"age": 7, "extra": null}]', 1)],
                     "exclude", ["city"], known=["mapped.before"])
    by = {f.path: f for f in found}
    assert list(by) == ["email", "age", "member", "joined", "tags.0", "city", "extra",
                        "mapped.before"]
    assert (by["email"].type, by["member"].type, by["joined"].type) == ("email", "boolean",
                                                                      "date")
    assert by["age"].type == "number" and by["age"].example == "42"
    assert by["city"].taken_in is False and by["age"].taken_in is True
    assert by["extra"].type == "null"
    assert by["age"].fits(Variable("n", "number")) and by["age"].fits(Variable("t", "text"))
    assert not by["email"].fits(Variable("n", "number"))
    assert by["joined"].fits(Variable("d", "date"))
    assert by["city"].fits(Variable("c", "choice", ("Ede", "Delft")))
    assert not by["city"].fits(Variable("c", "choice", ("Delft",)))
    assert value_type("3,5") == "text (number)"
    assert discover([_sample("not json")], "exclude", []) == []


def test_discovery_reads_form_samples_as_dotted_paths() -> None:
    form = Sample((0, 0), 10**12, "application/x-www-form-urlencoded",
                  "data[email]=a%40x.nl&data[merges][AGE]=36&tag=a&tag=b", False, 200, {})
    parts = Sample((0, 1), 10**12, "multipart/form-data; boundary=b",
                   '--b\r\nContent-Disposition: form-data; name="fields[day]"\r\n\r\n'
                   "05-03-2024\r\n--b--\r\n", False, 200, {})
    by = {f.path: f for f in discover([form, parts], "exclude", [])}
    assert list(by) == ["data.email", "data.merges.AGE", "tag.0", "tag.1", "fields.day"]
    assert (by["data.email"].type, by["data.merges.AGE"].type, by["fields.day"].type) == (
        "email", "text (number)", "date")
    assert by["data.merges.AGE"].fits(Variable("n", "number"))


def test_count_window_sums_the_last_day_in_buckets() -> None:
    w = CountWindow()
    now = 100 * DAY_MS
    w.add("a", now - 2 * DAY_MS, {"accepted": 50})  # too old
    w.add("a", now - DAY_MS + 2 * BUCKET_MS, {"accepted": 3, "filtered": 1,
                                              "filtered_by": {"x: why": 1}})
    w.add("a", now - 1000, {"accepted": 2, "invited": 2})
    w.add("b", now, {"accepted": 9})
    total = w.last_day("a", now)
    assert (total.accepted, total.filtered, total.invited) == (5, 1, 2)
    assert dict(total.filtered_by) == {"x: why": 1}
    assert w.last_day("a", now + DAY_MS).accepted == 0


def test_sample_store_is_bounded_and_forgets() -> None:
    store = SampleStore()
    now = 10**13
    for i in range(SAMPLES_PER_AUTOMATION + 5):
        store.add("a", _sample("{}", i, now))
    assert len(store.of("a", now)) == SAMPLES_PER_AUTOMATION
    assert store.of("a", now + int(SAMPLE_TTL_S * 1000) + 1) == []  # expired
    store.add("b", _sample("{}", 0, now))
    store.forget("b")
    assert store.of("b", now) == []


def _request(cookies: dict[str, str]) -> Request:
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return Request({"type": "http", "method": "GET", "path": "/console", "headers": [
        (b"cookie", header.encode())], "scheme": "http", "server": ("x", 80), "query_string": b""})


def test_session_cookie_and_csrf() -> None:
    auth = ConsoleAuth("the-token")
    assert auth.token_ok("the-token") and not auth.token_ok("the-token ")
    response = Response()
    session = auth.start_session(_request({}), response)
    set_cookie = next(h for h in response.headers.getlist("set-cookie")
                      if h.startswith(f"{SESSION_COOKIE}="))
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert "Path=/console" in set_cookie and "the-token" not in set_cookie
    value = set_cookie.split(";")[0].split("=", 1)[1]
    loaded = auth.session(_request({SESSION_COOKIE: value}))
    assert loaded == session
    assert auth.csrf_ok(loaded, session.csrf)
    assert not auth.csrf_ok(loaded, None) and not auth.csrf_ok(loaded, "0" * 64)
    # Another admin token: the old cookie no longer opens a session.
    assert ConsoleAuth("a-new-token").session(_request({SESSION_COOKIE: value})) is None
    assert auth.session(_request({SESSION_COOKIE: value + "x"})) is None
