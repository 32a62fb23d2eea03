"""The RSGI hand-over (`ingress.rsgi`) answers as the ASGI app, the reference, does.

The same requests, valid and invalid, go to one `IngressApp` twice: over ASGI (in-process
httpx) and over RSGI (granian's embedded server on a free port, serving `RsgiIngress` of the
same app): same status, headers, body (the event id aside) and the same Kafka record.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from granian.constants import Interfaces
from granian.server.embed import Server

from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import free_port
from ingress.rsgi import RsgiIngress

from .conftest import (
    Ingress,
    ServedIngress,
    make_snapshot,
    new_key,
    publish_snapshots,
    read_raw,
    sha,
)

# The headers both hand-overs must agree on (granian adds date and server on RSGI only).
COMPARED = ("content-type", "content-length", "retry-after", "allow")


@pytest.fixture
async def rsgi(ingress: Ingress) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    # The bound method, not the object: the fixture owns the app's start and stop, so
    # granian must not call `__rsgi_init__`/`__rsgi_del__` on it.
    server = Server(RsgiIngress(ingress.app).__rsgi__, address="127.0.0.1", port=port,
                    interface=Interfaces.RSGI, log_enabled=False)
    task = asyncio.create_task(server.serve())
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        for _ in range(100):
            try:
                await client.get("/healthz")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        yield client
    finally:
        await client.aclose()
        server.stop()
        await asyncio.wait_for(task, 10)


def _answer(r: httpx.Response) -> tuple[int, dict[str, str], object]:
    body: object = r.content
    if r.headers.get("content-type") == "application/json":
        body = orjson.loads(r.content)
        if isinstance(body, dict) and "event_id" in body:
            body["event_id"] = "*"  # new for every request
    return r.status_code, {h: r.headers[h] for h in COMPARED if h in r.headers}, body


def _requests(ing: Ingress) -> list[tuple[str, str, dict[str, str | bytes], bytes]]:
    key: dict[str, str | bytes] = {"X-API-Key": ing.key}
    json: dict[str, str | bytes] = {"Content-Type": "application/json"}
    one = orjson.dumps({"email": "a@example.com", "country": "NL", "age": 30})
    batch = orjson.dumps([{"email": f"r{i}@example.com", "country": "NL"} for i in range(5)])
    hook = ing.url()
    return [
        ("POST", hook, {**key, **json}, one),
        ("POST", hook, {**key, **json}, batch),
        ("POST", hook, {"Authorization": f"Bearer {ing.key}"}, one),
        ("POST", hook, {**key, "Content-Type": "application/x-ndjson"}, one + b"\n" + one),
        ("POST", hook, {**key, **json, "Content-Encoding": "gzip"}, gzip.compress(one)),
        ("POST", hook, {**key, "Content-Type": "application/x-www-form-urlencoded"},
         b"email=b%40example.com&country=NL"),
        ("POST", hook, json, one),                                   # 401 missing key
        ("POST", hook, {"X-API-Key": "nope", **json}, one),          # 401 invalid key
        ("POST", ing.url("ghost"), {**key, **json}, one),            # 404 unknown
        ("POST", hook, {**key, "Content-Type": "text/plain"}, one),  # 415
        ("POST", hook, {**key, **json}, b""),                        # 400 empty
        ("POST", hook, {**key, **json}, b'{"a": '),                  # 400 bad json
        ("POST", hook, {**key, **json}, b"[1, 2]"),                  # 400 not object
        ("POST", hook, {**key, **json}, b"[" * 70 + b"]" * 70),      # 400 too deep
        ("POST", hook, {**key, **json}, b'{"n": 123456789012345678901234}'),  # 400 number
        ("POST", hook, {**key, **json}, b"x" * (ing.settings.max_body_bytes + 1)),  # 413
        ("POST", hook, {**key, **json, "Content-Encoding": "br"}, one),  # 415 encoding
        ("POST", hook, {**key, **json, "Idempotency-Key": "x" * 256}, one),  # 400 bad key
        # Bytes beyond ASCII, which granian does not hand to RSGI (ingress.rsgi).
        ("POST", hook, {**key, **json, "Idempotency-Key": b"caf\xe9"}, one),  # 400 bad key
        ("POST", hook, {"X-API-Key": b"caf\xe9", **json}, one),     # 401 invalid key
        ("POST", hook + "/", {**key, **json}, one),                  # 404 (no redirect)
        ("GET", hook, key, b""),                                     # 405 with Allow
        ("POST", ing.url(test=True), {**key, **json}, one),          # the dry run
        ("GET", "/openapi.json", {}, b""),
        ("GET", "/nowhere", {}, b""),
    ]


async def test_rsgi_answers_as_asgi_does(ingress: Ingress, rsgi: httpx.AsyncClient) -> None:
    for method, url, headers, body in _requests(ingress):
        asgi = await ingress.client.request(method, url, headers=headers, content=body)
        served = await rsgi.request(method, url, headers=headers, content=body)
        assert _answer(served) == _answer(asgi), (method, url, headers, body[:80])


async def test_rsgi_publishes_what_asgi_publishes(ingress: Ingress,
                                                  rsgi: httpx.AsyncClient) -> None:
    headers = {"X-API-Key": ingress.key, "Content-Type": "application/x-ndjson",
               "Idempotency-Key": "k-1"}
    body = b'{"email": "a@example.com", "country": "NL"}\n{"email": "b@example.com"}'
    first = await ingress.client.post(ingress.url(), headers=headers, content=body)
    assert first.status_code == 202
    replay = await rsgi.post(ingress.url(), headers=headers, content=body)
    assert (replay.status_code, replay.json()) == (202, first.json())  # one store, one answer
    headers["Idempotency-Key"] = "k-2"
    second = await rsgi.post(ingress.url(), headers=headers, content=body)
    assert second.status_code == 202
    records = await read_raw(ingress.bootstrap, ingress.topics.raw, at_least=2)
    assert len(records) == 2
    a, b = records
    assert (a.key, a.value) == (b.key, b.value) == (ingress.automation.id, body)
    assert a.headers.keys() == b.headers.keys()
    same = {k for k in a.headers if k not in ("received-at", "request-id", "idempotency-key")}
    assert {k: a.headers[k] for k in same} == {k: b.headers[k] for k in same}
    assert b.headers["request-id"].decode() == second.json()["event_id"]
    assert b.headers["idempotency-key"] == b"k-2"


async def test_a_chunked_body_is_limited_as_it_streams(ingress: Ingress,
                                                       rsgi: httpx.AsyncClient) -> None:
    """No Content-Length: the body reaches the webhook chunk by chunk, and the limit holds."""
    limit = ingress.settings.max_body_bytes

    async def chunks(total: int) -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            piece = min(16384, total - sent)
            sent += piece
            yield b" " * piece
    headers = {"X-API-Key": ingress.key, "Content-Type": "application/json"}
    big = await rsgi.post(ingress.url(), headers=headers, content=chunks(limit + 1))
    assert big.status_code == 413, big.text
    assert big.json()["error"] == "body_too_large"

    async def small() -> AsyncIterator[bytes]:
        yield b'{"email": "a@'
        yield b'example.com"}'
    ok = await rsgi.post(ingress.url(), headers=headers, content=small())
    assert ok.status_code == 202, ok.text


async def test_served_over_rsgi_starts_publishes_and_stops(
        served_env: dict[str, str], kafka_bootstrap: str, topics: Topics,
        tmp_path: Path) -> None:
    """`hookstream ingress` with HOOKSTREAM_INGRESS_INTERFACE=rsgi: granian runs the app's
    start (`__rsgi_init__`) before serving and its stop (`__rsgi_del__`) on SIGTERM."""
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = make_snapshot(keys=[ApiKeyHash(sha(key))])
    await publish_snapshots(kafka_bootstrap, topics, snap)
    served = ServedIngress({**served_env, "HOOKSTREAM_INGRESS_INTERFACE": "rsgi"},
                           free_port(), tmp_path / "ingress.log")
    served.start()  # waits for /readyz 200: startup ran, the producer is connected
    try:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as client:
            r = await client.post(f"/v1/hooks/{snap.id}", content=b'{"email": "a@x.nl"}',
                                  headers={"X-API-Key": key})
            assert r.status_code == 202, r.text
    finally:
        code = served.stop()
    assert code == 0, (tmp_path / "ingress.log").read_text()[-3000:]
    records = await read_raw(kafka_bootstrap, topics.raw, at_least=1)
    assert [(rec.key, rec.value) for rec in records] == [(snap.id, b'{"email": "a@x.nl"}')]
