"""Inputs that cost nothing to refuse (issue 15): metric labels only for automations that
exist, /metrics on an internal address, the dry run's rate limit and record cap, the path as
sent, nesting and number limits, gzip, and headers that must not repeat. Each test here
fails on the code before the change (the finding it covers is named)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import httpx
import orjson
import pytest

from automations.bodies import MAX_DEPTH
from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from tests.ingress.conftest import (
    Ingress,
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    settings_for,
    sha,
    start_app,
)

JSON = {"Content-Type": "application/json"}


def _series(text: str) -> set[str]:
    """The labelled sample lines of the per-automation families."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines()
            if line.startswith(("hookstream_webhooks_", "hookstream_webhook_events_"))
            and 'automation="' in line}


async def test_made_up_ids_create_no_series(ingress: Ingress) -> None:
    """Finding: 400 unauthenticated requests to made-up ids created 400 series."""
    c = ingress.client
    # Every way a request for an id can be refused, once, so their UNKNOWN series exist.
    for headers in ({}, ingress.auth(), ingress.auth("wrong"),
                    {"Authorization": "Basic x"}, {**ingress.auth(), "Content-Type": "text/x"}):
        await c.post(ingress.url("warm-up"), content=b"{}", headers=headers)
        await c.post(ingress.url("warm-up", test=True), content=b"{}", headers=headers)
    before = _series((await c.get("/metrics")).text)
    statuses = set()
    for i in range(400):
        headers = [{}, ingress.auth(), ingress.auth("wrong"), {"Authorization": "Basic x"},
                   {**ingress.auth(), "Content-Type": "text/x"}][i % 5]
        r = await c.post(ingress.url(f"made-up-{i}", test=i % 2 == 0), content=b"{}",
                         headers=headers)
        statuses.add(r.status_code)
    after = _series((await c.get("/metrics")).text)
    assert statuses == {401, 404}, statuses  # missing key / not found (made-up id)
    assert after == before, after - before
    assert not any("made-up" in s for s in after)
    # A real automation's refusals are still its own.
    r = await c.post(ingress.url(), content=b"{", headers={**JSON, **ingress.auth()})
    assert r.status_code == 400
    text = (await c.get("/metrics")).text
    assert (f'hookstream_webhooks_rejected_total{{automation="{ingress.automation.id}",'
            'reason="bad_json"} 1.0') in text


async def test_metrics_on_an_internal_address(kafka_bootstrap: str, topics: Topics,
                                              tmp_path: Path) -> None:
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    app, client = await start_app(settings_for(kafka_bootstrap, topics, tmp_path,
                                               ingress_metrics_port=0))
    try:
        assert app.metrics_server is not None
        r = await client.post(f"/v1/hooks/{snap.id}", content=b'{"email": "a@example.com"}',
                              headers={**JSON, "X-API-Key": key})
        assert r.status_code == 202, r.text
        public = await client.get("/metrics")
        assert public.status_code == 404 and public.json()["error"] == "not_found"
        assert (await client.get("/healthz")).status_code == 200  # probes stay public
        async with httpx.AsyncClient() as internal:
            text = (await internal.get(
                f"http://127.0.0.1:{app.metrics_server.port}/metrics")).text
        assert f'hookstream_webhooks_accepted_total{{automation="{snap.id}"}} 1.0' in text
    finally:
        await client.aclose()
        await app.shutdown()


async def test_an_encoded_slash_does_not_reach_the_dry_run(ingress: Ingress) -> None:
    """Finding: `POST /v1/hooks/{id}%2Ftest` reached the dry run."""
    c = ingress.client
    body = orjson.dumps({"email": "a@example.com", "country": "NL"})
    for raw in (f"/v1/hooks/{ingress.automation.id}%2Ftest",
                f"/v1/hooks/{ingress.automation.id}%2ftest",
                f"/v1/hooks/{ingress.automation.id}%2F"):
        r = await c.post(raw, content=body, headers={**JSON, **ingress.auth()})
        assert r.status_code == 404, (raw, r.text)
        assert r.json()["error"] == "not_found"
    # The route itself still works, and %2F in the id of the webhook route is refused too.
    assert (await c.post(ingress.url(test=True), content=body,
                         headers={**JSON, **ingress.auth()})).status_code == 200


async def test_dry_run_is_rate_limited_and_capped(kafka_bootstrap: str, topics: Topics,
                                                  tmp_path: Path) -> None:
    """Finding: the dry run had no rate limit (and ran any number of records)."""
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    other = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap, other)
    app, client = await start_app(settings_for(kafka_bootstrap, topics, tmp_path,
                                               dry_run_rate=0.01, dry_run_burst=3,
                                               dry_run_max_records=5))
    try:
        auth = {**JSON, "X-API-Key": key}
        five = orjson.dumps([{"email": f"u{i}@example.com"} for i in range(5)])
        six = orjson.dumps([{"email": f"u{i}@example.com"} for i in range(6)])
        url = f"/v1/hooks/{snap.id}/test"
        assert (await client.post(url, content=five, headers=auth)).status_code == 200
        capped = await client.post(url, content=six, headers=auth)
        assert capped.status_code == 413, capped.text
        assert capped.json()["error"] == "too_many_records"
        assert "at most 5" in capped.json()["detail"]
        assert (await client.post(url, content=five, headers=auth)).status_code == 200
        limited = await client.post(url, content=five, headers=auth)
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        # Per automation: another one still has its burst; the webhook is not limited by it.
        assert (await client.post(f"/v1/hooks/{other.id}/test", content=five,
                                  headers=auth)).status_code == 200
        assert (await client.post(f"/v1/hooks/{snap.id}", content=five,
                                  headers=auth)).status_code == 202
    finally:
        await client.aclose()
        await app.shutdown()


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b'{"email": "a@example.com"}' + b"}" * (depth - 1)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 1000, 3000])
async def test_nesting_is_capped_on_both_routes(ingress: Ingress, depth: int) -> None:
    """Finding: 1,000 levels were a 500 (RecursionError) in the dry run, a 202 on the
    webhook (and then blocked the worker)."""
    for test in (False, True):
        r = await ingress.client.post(ingress.url(test=test), content=_nested(depth),
                                      headers={**JSON, **ingress.auth()})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "too_deep"
        assert str(MAX_DEPTH) in r.json()["detail"]
    ok = await ingress.client.post(ingress.url(test=True), content=_nested(MAX_DEPTH),
                                   headers={**JSON, **ingress.auth()})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("number", [b"1180591620717411303424", b"1e-400", b"-1e999",
                                    b"-9223372036854775809"])
async def test_numbers_that_would_change_are_refused(ingress: Ingress, number: bytes) -> None:
    """Finding: 2**70 became the text "1.1805916207174113e+21" and 1e-400 became 0."""
    body = b'{"email": "a@example.com", "first_name": ' + number + b"}"
    for test in (False, True):
        r = await ingress.client.post(ingress.url(test=test), content=body,
                                      headers={**JSON, **ingress.auth()})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "number_out_of_range"
    as_text = b'{"email": "a@example.com", "first_name": "' + number + b'", "country": "NL"}'
    r = await ingress.client.post(ingress.url(test=True), content=as_text,
                                  headers={**JSON, **ingress.auth()})
    assert r.json()["dry_run"]["records"][0]["variables"]["first_name"] == number.decode()


async def test_gzip_is_decoded_within_the_limit(ingress: Ingress) -> None:
    """Finding: a gzip body got 400 bad_json and a plain body labelled gzip got 202."""
    c = ingress.client
    body = orjson.dumps({"email": "gz@example.com", "country": "NL"})
    headers = {**JSON, **ingress.auth(), "Content-Encoding": "gzip"}
    r = await c.post(ingress.url(), content=gzip.compress(body), headers=headers)
    assert r.status_code == 202, r.text
    event_id = r.json()["event_id"]
    records = await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=1)
    [rec] = [x for x in records if x.headers["request-id"].decode() == event_id]
    assert rec.value == body  # published decoded: the worker never sees gzip
    dry = await c.post(ingress.url(test=True), content=gzip.compress(body), headers=headers)
    assert dry.status_code == 200 and dry.json()["dry_run"]["summary"]["accepted"] == 1
    # A bomb: 1 KiB of gzip that would be 64 MiB; refused at the body limit, not inflated.
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))
    assert len(bomb) < ingress.settings.max_body_bytes
    r = await c.post(ingress.url(), content=bomb, headers=headers)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large", r.text
    for bad in (body, gzip.compress(body)[:-6], b"\x1f\x8b" + b"\x00" * 30):
        r = await c.post(ingress.url(), content=bad, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "bad_content_encoding"
    for encoding in ("br", "deflate", "gzip, gzip", "compress"):
        r = await c.post(ingress.url(), content=body,
                         headers={**headers, "Content-Encoding": encoding})
        assert r.status_code == 415, r.text
        assert r.json()["error"] == "unsupported_content_encoding"
    r = await c.post(ingress.url(), content=body, headers={**headers,
                                                           "Content-Encoding": "identity"})
    assert r.status_code == 202


@pytest.mark.parametrize("name", ["X-API-Key", "Authorization", "Content-Type",
                                  "Idempotency-Key", "Content-Encoding"])
async def test_repeated_headers_are_refused(ingress: Ingress, name: str) -> None:
    """Finding: with two X-API-Key headers the last one won."""
    values = {"X-API-Key": (ingress.key, "other"),
              "Authorization": (f"Bearer {ingress.key}", "Bearer other"),
              "Content-Type": ("application/json", "application/json"),
              "Idempotency-Key": ("a", "b"), "Content-Encoding": ("identity", "identity")}[name]
    headers = [(name, values[0]), (name, values[1])]
    if name != "X-API-Key":
        headers.append(("X-API-Key", ingress.key))
    for test in (False, True):
        r = await ingress.client.post(ingress.url(test=test), content=b'{"email": "a@b.co"}',
                                      headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "ambiguous_header"
        assert re.search(name, r.json()["detail"], re.IGNORECASE)


async def test_a_key_in_both_headers_must_agree(ingress: Ingress) -> None:
    c, body = ingress.client, b'{"email": "a@example.com"}'
    same = await c.post(ingress.url(), content=body, headers={
        **JSON, **ingress.auth(), "Authorization": f"Bearer {ingress.key}"})
    assert same.status_code == 202, same.text
    other = await c.post(ingress.url(), content=body, headers={
        **JSON, **ingress.auth(), "Authorization": "Bearer someone-elses"})
    assert other.status_code == 400 and other.json()["error"] == "ambiguous_header"
    proxy = await c.post(ingress.url(), content=body, headers={
        **JSON, **ingress.auth(), "Authorization": "Basic dTpw"})
    assert proxy.status_code == 202, proxy.text
