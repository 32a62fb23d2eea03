"""Every answer of POST /v1/hooks/{id} other than 202, and the authentication cases."""

from __future__ import annotations

import orjson
import pytest

from automations.snapshot import ApiKeyHash
from tests.ingress.conftest import (
    Ingress,
    grace_keys,
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    settings_for,
    sha,
    start_app,
)

OBJ = b'{"email": "a@example.com", "first_name": "Ann", "country": "NL"}'
JSON = {"Content-Type": "application/json"}


def err(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = orjson.loads(resp.content)
    assert body["error"] == code
    assert isinstance(body["detail"], str) and len(body["detail"]) > 10
    assert resp.headers["content-type"] == "application/json"
    return body


async def wait_applied(ing: Ingress, automation_id: str, version: int) -> None:
    import asyncio

    async with asyncio.timeout(15):
        while (s := ing.app.cache.get(automation_id)) is None or s.version < version:
            await asyncio.sleep(0.05)


async def test_accepts_and_publishes_one_object(ingress: Ingress) -> None:
    resp = await ingress.client.post(ingress.url(), content=OBJ,
                                     headers={**JSON, **ingress.auth()})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["accepted"] == 1
    recs = await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=1)
    assert len(recs) == 1
    rec = recs[0]
    assert rec.key == ingress.automation.id and rec.value == OBJ
    assert rec.headers["request-id"] == body["event_id"].encode()
    assert rec.headers["content-type"] == b"application/json"
    assert rec.headers["received-at"].isdigit()
    assert "idempotency-key" not in rec.headers


async def test_batch_and_ndjson_are_one_record_each(ingress: Ingress) -> None:
    batch = b'[{"email": "a@x.nl"}, {"email": "b@x.nl"}, {"email": "c@x.nl"}]'
    nd = b'{"email": "a@x.nl"}\n\n{"email": "b@x.nl"}\n'
    r1 = await ingress.client.post(ingress.url(), content=batch,
                                   headers={**JSON, **ingress.auth()})
    r2 = await ingress.client.post(ingress.url(), content=nd, headers={
        "Content-Type": "application/x-ndjson", "Authorization": f"Bearer {ingress.key}"})
    assert (r1.status_code, r1.json()["accepted"]) == (202, 3)
    assert (r2.status_code, r2.json()["accepted"]) == (202, 2)
    recs = {r.headers["request-id"].decode(): r
            for r in await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=2)}
    assert recs[r1.json()["event_id"]].value == batch
    assert recs[r2.json()["event_id"]].value == nd
    assert recs[r2.json()["event_id"]].headers["content-type"] == b"application/x-ndjson"


async def test_auth_cases(ingress: Ingress, kafka_bootstrap: str) -> None:
    in_grace, expired = new_key(), new_key()
    other_key = new_key()
    snap = make_snapshot(ingress.automation.id, keys=grace_keys(ingress.key, in_grace, expired),
                         version=2)
    other = make_snapshot(keys=[ApiKeyHash(sha(other_key))])
    await publish_snapshots(kafka_bootstrap, ingress.topics, snap, other)
    await wait_applied(ingress, snap.id, 2)
    await wait_applied(ingress, other.id, 1)
    post = ingress.client.post
    err(await post(ingress.url(), content=OBJ, headers=JSON), 401, "missing_api_key")
    err(await post(ingress.url(), content=OBJ, headers={**JSON, "X-API-Key": ""}), 401,
        "missing_api_key")
    err(await post(ingress.url(), content=OBJ, headers={**JSON, "Authorization": "Basic eDp5"}),
        401, "missing_api_key")
    err(await post(ingress.url(), content=OBJ, headers={**JSON, **ingress.auth(new_key())}),
        401, "invalid_api_key")
    # Another automation's key does not open this one (and vice versa).
    err(await post(ingress.url(), content=OBJ, headers={**JSON, **ingress.auth(other_key)}),
        401, "invalid_api_key")
    err(await post(ingress.url(other.id), content=OBJ, headers={**JSON, **ingress.auth()}),
        401, "invalid_api_key")
    # Rotated out: past its grace period it no longer works; within it, it still does.
    err(await post(ingress.url(), content=OBJ, headers={**JSON, **ingress.auth(expired)}),
        401, "invalid_api_key")
    ok = await post(ingress.url(), content=OBJ, headers={**JSON, **ingress.auth(in_grace)})
    assert ok.status_code == 202, ok.text
    ok = await post(ingress.url(), content=OBJ,
                    headers={**JSON, "Authorization": f"bearer {ingress.key}"})
    assert ok.status_code == 202, ok.text
    ok = await post(ingress.url(other.id), content=OBJ,
                    headers={**JSON, **ingress.auth(other_key)})
    assert ok.status_code == 202, ok.text


async def test_unknown_and_disabled_automation(ingress: Ingress, kafka_bootstrap: str) -> None:
    err(await ingress.client.post(ingress.url("no-such-automation"), content=OBJ,
                                  headers={**JSON, **ingress.auth()}), 404, "unknown_automation")
    snap = make_snapshot(ingress.automation.id, keys=[ApiKeyHash(sha(ingress.key))],
                         enabled=False, version=2, disabled_reason="10 failures in a row")
    await publish_snapshots(kafka_bootstrap, ingress.topics, snap)
    await wait_applied(ingress, snap.id, 2)
    body = err(await ingress.client.post(ingress.url(), content=OBJ,
                                         headers={**JSON, **ingress.auth()}),
               409, "automation_disabled")
    assert "10 failures in a row" in body["detail"]
    # A deleted automation (tombstone) is unknown at once.
    from aiokafka import AIOKafkaProducer
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    await producer.send_and_wait(ingress.topics.config, None, key=snap.id.encode())
    await producer.stop()
    import asyncio
    async with asyncio.timeout(15):
        while ingress.app.cache.get(snap.id) is not None:
            await asyncio.sleep(0.05)
    err(await ingress.client.post(ingress.url(), content=OBJ,
                                  headers={**JSON, **ingress.auth()}), 404, "unknown_automation")


@pytest.mark.parametrize(("body", "ctype", "code", "fragment"), [
    (b'{"email": "a@x.nl",}', "application/json", "bad_json", "line 1, column"),
    (b'{"a": 1}\n{"b": 2\n', "application/x-ndjson", "bad_json", "line 2"),
    (b"42", "application/json", "not_object", "number"),
    (b'[{"a": 1}, "x"]', "application/json", "not_object", "item 1"),
    (b"", "application/json", "empty_body", "empty"),
    (b"  \n ", "application/json", "empty_body", "empty"),
    (b"[]", "application/json", "empty_body", "no records"),
])
async def test_bad_bodies(ingress: Ingress, body: bytes, ctype: str, code: str,
                          fragment: str) -> None:
    got = err(await ingress.client.post(ingress.url(), content=body,
                                        headers={"Content-Type": ctype, **ingress.auth()}),
              400, code)
    assert fragment.lower() in got["detail"].lower(), got


async def test_media_types(ingress: Ingress) -> None:
    for ctype in ("text/plain", "multipart/mixed; boundary=x",
                  "application/json; charset=latin-1"):
        err(await ingress.client.post(ingress.url(), content=OBJ,
                                      headers={"Content-Type": ctype, **ingress.auth()}),
            415, "unsupported_media_type")
    for ctype in ("application/json; charset=utf-8", "application/vnd.x+json"):
        resp = await ingress.client.post(ingress.url(), content=OBJ,
                                         headers={"Content-Type": ctype, **ingress.auth()})
        assert resp.status_code == 202, (ctype, resp.text)


async def test_body_too_large(kafka_bootstrap: str, topics, tmp_path) -> None:
    from core.kafka.topics import ensure_topics

    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    app, client = await start_app(settings_for(kafka_bootstrap, topics, tmp_path,
                                               max_body_bytes=1000))
    try:
        big = b'{"email": "a@x.nl", "pad": "' + b"x" * 1000 + b'"}'
        url = f"/v1/hooks/{snap.id}"
        # Declared too large: refused before reading.
        err(await client.post(url, content=big, headers={**JSON, "X-API-Key": key}),
            413, "body_too_large")

        async def chunks():
            for _ in range(20):
                yield b" " * 100  # no Content-Length: the limit applies while streaming
        err(await client.post(url, content=chunks(), headers={**JSON, "X-API-Key": key}),
            413, "body_too_large")
        ok = await client.post(url, content=b'{"email": "a@x.nl"}',
                               headers={**JSON, "X-API-Key": key})
        assert ok.status_code == 202
        recs = await read_raw(kafka_bootstrap, topics.raw, at_least=1)
        assert len(recs) == 1  # nothing of the refused bodies went out
    finally:
        await client.aclose()
        await app.shutdown()


async def test_rate_limit(kafka_bootstrap: str, topics, tmp_path) -> None:
    from core.kafka.topics import ensure_topics

    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    a, b = make_snapshot(keys=[ApiKeyHash(sha(key))]), make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, a, b)
    app, client = await start_app(settings_for(kafka_bootstrap, topics, tmp_path,
                                               rate_limit=0.2, rate_burst=3))
    try:
        statuses = []
        for _ in range(5):
            r = await client.post(f"/v1/hooks/{a.id}", content=OBJ,
                                  headers={**JSON, "X-API-Key": key})
            statuses.append(r.status_code)
        assert statuses == [202, 202, 202, 429, 429]
        body = err(r, 429, "rate_limited")
        assert body
        assert 1 <= int(r.headers["retry-after"]) <= 5
        # Per automation: another one still passes.
        r = await client.post(f"/v1/hooks/{b.id}", content=OBJ,
                              headers={**JSON, "X-API-Key": key})
        assert r.status_code == 202
    finally:
        await client.aclose()
        await app.shutdown()


async def test_other_routes_and_methods(ingress: Ingress) -> None:
    c = ingress.client
    wrong = await c.get(ingress.url(), headers=ingress.auth())
    err(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"
    wrong = await c.post("/healthz")
    err(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET, HEAD"
    err(await c.post("/v1/hooks/a/b/c", content=OBJ, headers=ingress.auth()), 404, "not_found")
    # A trailing slash is another address, not a redirect a webhook sender might not follow.
    err(await c.post(ingress.url() + "/", content=OBJ, headers={**JSON, **ingress.auth()}),
        404, "not_found")
    err(await c.get("/nowhere"), 404, "not_found")
    err(await c.post(ingress.url(), content=OBJ, headers={
        **JSON, **ingress.auth(), "Idempotency-Key": "x" * 300}), 400, "invalid_idempotency_key")
    assert (await c.get("/healthz")).json() == {"status": "ok"}
    ready = await c.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    spec = (await c.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/hooks/{automation_id}" in spec["paths"]
    post = spec["paths"]["/v1/hooks/{automation_id}"]["post"]
    assert {"202", "400", "401", "404", "409", "413", "415", "429", "503"} <= set(post["responses"])


async def test_metrics(ingress: Ingress) -> None:
    c = ingress.client
    assert (await c.post(ingress.url(), content=OBJ,
                         headers={**JSON, **ingress.auth()})).status_code == 202
    await c.post(ingress.url(), content=b"{", headers={**JSON, **ingress.auth()})
    await c.post(ingress.url("nope"), content=OBJ, headers={**JSON, **ingress.auth()})
    text = (await c.get("/metrics")).text
    aid = ingress.automation.id
    assert f'hookstream_webhooks_accepted_total{{automation="{aid}"}} 1.0' in text
    assert (f'hookstream_webhooks_rejected_total{{automation="{aid}",reason="bad_json"}} 1.0'
            in text)
    assert 'hookstream_webhooks_rejected_total{automation="_unknown",reason="unknown_automation"}' \
        in text
    assert ('hookstream_ingress_requests_total{route="/v1/hooks/{automation_id}",status="202"} '
            '1.0') in text
    assert "hookstream_ingress_publish_seconds_count 1.0" in text
    assert "hookstream_ingress_publishes_in_flight 0.0" in text
