"""POST /v1/hooks/{id}/test: the connection check and the dry run; it publishes nothing."""

from __future__ import annotations

import asyncio

import orjson

from tests.ingress.conftest import Ingress, read_raw


async def test_connection_check_names_the_automation(ingress: Ingress) -> None:
    resp = await ingress.client.post(ingress.url(test=True), headers=ingress.auth())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["ok"] is True
    assert body["automation"] == {"id": ingress.automation.id, "name": "Welcome survey",
                                  "enabled": True, "survey": "Customer satisfaction"}
    assert "dry_run" not in body
    bad = await ingress.client.post(ingress.url(test=True), headers=ingress.auth("nope"))
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_api_key"
    missing = await ingress.client.post(ingress.url("ghost", test=True), headers=ingress.auth())
    assert missing.status_code == 404


async def test_dry_run_reports_everything_and_publishes_nothing(ingress: Ingress) -> None:
    sample = [
        {"email": "ann@example.com", "first_name": "Ann", "age": "42", "country": "NL",
         "customer": {"city": "Utrecht"}, "secret": "dropped"},
        {"email": "bob@example.com", "country": "BE"},
        {"email": "not-an-email", "age": "old", "country": "NL"},
    ]
    resp = await ingress.client.post(ingress.url(test=True), content=orjson.dumps(sample),
                                     headers={"Content-Type": "application/json",
                                              **ingress.auth()})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["published"] is False
    run = body["dry_run"]
    assert run["summary"] == {"records": 3, "accepted": 1, "filtered_out": 1, "rejected": 1}
    ann, bob, bad = run["records"]
    assert "secret" in ann["fields_found"] and "customer.city" in ann["fields_found"]
    assert "secret" not in ann["fields_taken_in"]
    assert ann["variables"] == {"first_name": "Ann", "age": 42, "city": "Utrecht"}
    assert ann["filters"]["passed"] is True
    assert bob["outcome"] == "filtered_out" and bob["filters"]["passed"] is False
    assert bob["filters"]["failed"]  # names the condition that failed
    kinds = {e["kind"] for e in bad["errors"]}
    assert {"invalid_email", "type_mismatch"} <= kinds
    bad_json = await ingress.client.post(ingress.url(test=True), content=b'{"a": ',
                                         headers={"Content-Type": "application/json",
                                                  **ingress.auth()})
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "bad_json"
    # Nothing reached webhooks.raw: publish one real event and find only it there.
    real = await ingress.client.post(ingress.url(), content=b'{"email": "x@example.com"}',
                                     headers={"Content-Type": "application/json",
                                              **ingress.auth()})
    assert real.status_code == 202
    await asyncio.sleep(0.3)
    recs = await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=1)
    assert [r.headers["request-id"].decode() for r in recs] == [real.json()["event_id"]]


async def test_each_authenticated_test_request_is_a_sample_for_the_console(
        ingress: Ingress) -> None:
    """The console's live connection test follows `automations.samples`: every request the
    key opened, with its verdict, keyed by automation; never the key; refused keys not."""
    body = orjson.dumps({"email": "ann@example.com", "country": "NL", "age": "42"})
    ok = await ingress.client.post(ingress.url(test=True), content=body, headers={
        "Content-Type": "application/json", **ingress.auth()})
    assert ok.status_code == 200
    bad = await ingress.client.post(ingress.url(test=True), content=b'{"a": ', headers={
        "Content-Type": "application/json", **ingress.auth()})
    assert bad.status_code == 400
    wrong_key = await ingress.client.post(ingress.url(test=True), content=body, headers={
        "Content-Type": "application/json", **ingress.auth("nope")})
    assert wrong_key.status_code == 401
    recs = await read_raw(ingress.bootstrap, ingress.topics.samples, at_least=2)
    assert len(recs) == 2 and {r.key for r in recs} == {ingress.automation.id}
    first, second = (orjson.loads(r.value) for r in recs)
    assert first["body"] == body.decode() and first["status"] == 200
    assert first["content_type"] == "application/json" and first["truncated"] is False
    assert first["answer"]["dry_run"]["summary"]["accepted"] == 1
    assert second["status"] == 400 and second["answer"]["error"] == "bad_json"
    assert isinstance(first["received_at"], int)
    assert all(ingress.key.encode() not in r.value for r in recs)
