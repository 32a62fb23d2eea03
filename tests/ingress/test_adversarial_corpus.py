"""An adversarial corpus against a REAL running ingress (granian, its own process) on a real
broker, then the real streams worker (issue 15, "Done when").

Every request gets only a documented answer: a 4xx with its machine-readable code from
`CODES` (the table in docs/DESIGN.md, "Ingress limits and error codes"), or a 202. Every 202
ends downstream as invitations or dead-letter records covering each of its records (the
automation has no filter, so nothing may vanish); the ingress and the worker stay up.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from automations.snapshot import ApiKeyHash
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import free_port
from ingress.errors import ERRORS
from schemas import codec
from tests.ingress.conftest import ServedIngress, make_snapshot, new_key, publish_snapshots, sha
from tests.streams.conftest import Worker

# The documented refusals: status -> codes (docs/DESIGN.md has the same table).
CODES = {400: {"bad_json", "not_object", "bad_form", "empty_body", "too_deep",
               "number_out_of_range", "bad_content_encoding", "ambiguous_header",
               "invalid_idempotency_key"},
         401: {"missing_api_key", "invalid_api_key", "missing_signature", "invalid_signature",
               "timestamp_out_of_range"},
         404: {"unknown_automation", "not_found"}, 405: {"method_not_allowed"},
         409: {"automation_disabled"}, 413: {"body_too_large", "too_many_records"},
         415: {"unsupported_media_type", "unsupported_content_encoding"},
         429: {"rate_limited"}}
MAX_BODY = 64 * 1024  # small, so "too large" costs little to send
JSON = "application/json"


@dataclass
class Case:
    name: str
    body: Any = b""  # bytes, or an async iterator of bytes (sent chunked)
    content_type: str | None = JSON
    status: int = 202
    code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    path: str = "{hook}"  # {hook}: the automation's webhook path; {test}: its dry run
    method: str = "POST"
    auth: bool = True


def _deep(depth: int, leaf: bytes = b'"x"') -> bytes:
    return b'{"email": "deep@example.com", "d": ' + b'{"a":' * depth + leaf + b"}" * depth + b"}"


async def _chunks(total: int, size: int = 8192) -> AsyncIterator[bytes]:
    yield b'{"email": "chunk@example.com", "pad": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


async def _pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0und") -> bytes:
    out = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"'
                                                     if filename else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").encode()
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


OK = b'{"email": "ok@example.com", "first_name": "Ann", "age": 42, "customer": {"city": "X"}}'
GZ = {"Content-Encoding": "gzip"}


def corpus() -> list[Case]:
    c = Case
    return [
        # --- bodies that are accepted: each must end as an invitation or a DLQ record ------
        c("plain object", OK),
        c("batch of three", b'[{"email": "b1@example.com"}, {"email": "b2@example.com"}, '
                            b'{"email": "b3@example.com", "age": "x"}]'),
        c("ndjson", b'{"email": "n1@example.com"}\n\n{"email": "n2@example.com"}\n',
          "application/x-ndjson"),
        c("vendor json type", b'{"email": "v@example.com"}', "application/vnd.acme+json"),
        c("no content type", b'{"email": "none@example.com"}', None),
        c("form", b"email=f%40example.com&first_name=%C3%A9", "application/x-www-form-urlencoded"),
        c("form latin-1", b"email=l%40example.com&first_name=\xe9",
          "application/x-www-form-urlencoded; charset=latin-1"),
        c("multipart text", _multipart([("email", None, b"m@example.com")]),
          "multipart/form-data; boundary=b0und"),
        c("no email", b'{"first_name": "Nobody"}'),
        c("empty object", b"{}"),
        c("bad email", b'{"email": "not an address"}'),
        c("age not a number", b'{"email": "age@example.com", "age": "old"}'),
        c("age beyond 64 bits as text", b'{"email": "big@example.com", '
                                        b'"age": "123456789012345678901234567890"}'),
        c("age tiny as text", b'{"email": "tiny@example.com", "age": "1e-400"}'),
        c("utf-8 bom", b'\xef\xbb\xbf{"email": "bom@example.com"}'),
        c("duplicate keys: last wins", b'{"email": "x", "email": "dup@example.com"}'),
        c("overlong string", b'{"email": "long@example.com", "first_name": "'
                             + b"y" * (MAX_BODY - 200) + b'"}'),
        c("nul and odd unicode", b'{"email": "u@example.com", "first_name": "a\\u0000b\\u202e"}'),
        c("idn domain", '{"email": "jan@b\u00fccher.example"}'.encode()),
        c("at the depth limit", _deep(62)),
        c("largest u64", b'{"email": "u64@example.com", "n": 18446744073709551615}'),
        c("gzip", gzip.compress(b'{"email": "gz@example.com"}'), headers=tuple(GZ.items())),
        c("chunked small", _pieces(b'{"email": ', b'"ch@example.com"}')),
        c("unknown field types", b'{"email": "t@example.com", "first_name": [1, {"a": null}]}'),
        # --- nesting ---------------------------------------------------------------------
        c("65 deep", _deep(64), status=400, code="too_deep"),
        c("300 deep", _deep(300), status=400, code="too_deep"),
        c("1000 deep", _deep(1000), status=400, code="too_deep"),
        c("5000 deep", _deep(5000), status=400, code="too_deep"),
        c("arrays 200 deep", b"[" * 200 + b"]" * 200, status=400, code="too_deep"),
        c("ndjson line too deep", b'{"email": "a@b.co"}\n' + _deep(100),
          "application/x-ndjson", status=400, code="too_deep"),
        c("dry run 1000 deep", _deep(1000), path="{test}", status=400, code="too_deep"),
        # --- numbers ---------------------------------------------------------------------
        c("2**70", b'{"email": "a@b.co", "n": 1180591620717411303424}', status=400,
          code="number_out_of_range"),
        c("1e-400", b'{"email": "a@b.co", "n": 1e-400}', status=400, code="number_out_of_range"),
        c("1e400", b'{"email": "a@b.co", "n": 1e400}', status=400, code="number_out_of_range"),
        c("below -2**63", b'{"email": "a@b.co", "n": -9223372036854775809}', status=400,
          code="number_out_of_range"),
        c("5000 digits", b'{"email": "a@b.co", "n": ' + b"9" * 5000 + b"}", status=400,
          code="number_out_of_range"),
        c("NaN", b'{"email": "a@b.co", "n": NaN}', status=400, code="bad_json"),
        c("Infinity", b'{"email": "a@b.co", "n": Infinity}', status=400, code="bad_json"),
        c("-Infinity", b'{"email": "a@b.co", "n": -Infinity}', status=400, code="bad_json"),
        # --- malformed JSON and bytes ------------------------------------------------------
        c("invalid utf-8", b'{"email": "a@b.co", "n": "\xff\xfe"}', status=400, code="bad_json"),
        c("utf-8 surrogate bytes", b'{"email": "\xed\xa0\x80@b.co"}', status=400,
          code="bad_json"),
        c("utf-16 body", '{"email": "a@b.co"}'.encode("utf-16"), status=400, code="bad_json"),
        c("truncated", b'{"email": "a@b.co", ', status=400, code="bad_json"),
        c("trailing garbage", b'{"email": "a@b.co"} x', status=400, code="bad_json"),
        c("single quotes", b"{'email': 'a@b.co'}", status=400, code="bad_json"),
        c("bom only", b"\xef\xbb\xbf", status=400, code="empty_body"),
        c("empty body", b"", status=400, code="empty_body"),
        c("whitespace body", b" \n\t ", status=400, code="empty_body"),
        c("empty array", b"[]", status=400, code="empty_body"),
        c("null", b"null", status=400, code="not_object"),
        c("a string", b'"a@b.co"', status=400, code="not_object"),
        c("a number", b"42", status=400, code="not_object"),
        c("batch with a scalar", b'[{"email": "a@b.co"}, 1]', status=400, code="not_object"),
        # --- sizes -----------------------------------------------------------------------
        c("over the limit", b'{"pad": "' + b"z" * MAX_BODY + b'"}', status=413,
          code="body_too_large"),
        c("chunked huge", _chunks(4 * MAX_BODY), status=413, code="body_too_large"),
        c("dry run over the record cap", orjson.dumps([{"email": f"r{i}@b.co"}
                                                       for i in range(101)]),
          path="{test}", status=413, code="too_many_records"),
        # --- content types and encodings ----------------------------------------------------
        c("text/plain", b'{"email": "a@b.co"}', "text/plain", status=415,
          code="unsupported_media_type"),
        c("xml", b"<email>a@b.co</email>", "application/xml", status=415,
          code="unsupported_media_type"),
        c("json latin-1", b'{"email": "a@b.co"}', "application/json; charset=latin-1",
          status=415, code="unsupported_media_type"),
        c("form utf-16", b"email=a", "application/x-www-form-urlencoded; charset=utf-16",
          status=415, code="unsupported_media_type"),
        c("multipart file part", _multipart([("email", None, b"a@b.co"),
                                             ("cv", "cv.pdf", b"%PDF")]),
          "multipart/form-data; boundary=b0und", status=415, code="unsupported_media_type"),
        c("multipart no boundary", _multipart([("email", None, b"a@b.co")]),
          "multipart/form-data", status=400, code="bad_form"),
        c("form bad percent", b"email=%ZZ", "application/x-www-form-urlencoded", status=400,
          code="bad_form"),
        c("form conflicting names", b"a=1&a[b]=2", "application/x-www-form-urlencoded",
          status=400, code="bad_form"),
        c("form 17 bracket levels", b"a" + b"[x]" * 17 + b"=1",
          "application/x-www-form-urlencoded", status=400, code="bad_form"),
        c("form bytes not utf-8", b"email=\xff", "application/x-www-form-urlencoded",
          status=400, code="bad_form"),
        c("gzip bomb", gzip.compress(b" " * (64 * MAX_BODY)), headers=tuple(GZ.items()),
          status=413, code="body_too_large"),
        c("plain labelled gzip", b'{"email": "a@b.co"}', headers=tuple(GZ.items()),
          status=400, code="bad_content_encoding"),
        c("truncated gzip", gzip.compress(b'{"email": "a@b.co"}')[:-5],
          headers=tuple(GZ.items()), status=400, code="bad_content_encoding"),
        c("brotli", b'{"email": "a@b.co"}', headers=(("Content-Encoding", "br"),),
          status=415, code="unsupported_content_encoding"),
        c("deflate", b'{"email": "a@b.co"}', headers=(("Content-Encoding", "deflate"),),
          status=415, code="unsupported_content_encoding"),
        c("gzip twice listed", b'{"email": "a@b.co"}',
          headers=(("Content-Encoding", "gzip, gzip"),), status=415,
          code="unsupported_content_encoding"),
        # --- paths and methods -------------------------------------------------------------
        c("encoded slash to the dry run", OK, path="{hook}%2Ftest", status=404, code="not_found"),
        c("encoded slash, lower case", OK, path="{hook}%2ftest", status=404, code="not_found"),
        c("encoded slash in the id", OK, path="/v1/hooks/a%2Fb", status=404, code="not_found"),
        c("unknown automation", OK, path="/v1/hooks/made-up", status=404,
          code="unknown_automation"),
        c("very long id", OK, path="/v1/hooks/" + "x" * 4000, status=404,
          code="unknown_automation"),
        c("unicode id", OK, path="/v1/hooks/%C3%A9%F0%9F%98%80", status=404,
          code="unknown_automation"),
        c("no id", OK, path="/v1/hooks/", status=404, code="not_found"),
        c("trailing slash", OK, path="{hook}/", status=404, code="not_found"),
        c("dot segments", OK, path="/v1/hooks/../hooks/x", status=404),
        c("GET the webhook", b"", method="GET", status=405, code="method_not_allowed"),
        c("PUT the webhook", OK, method="PUT", status=405, code="method_not_allowed"),
        c("disabled automation", OK, path="{disabled}", status=409, code="automation_disabled"),
        # --- keys and headers ----------------------------------------------------------------
        c("no key", OK, auth=False, status=401, code="missing_api_key"),
        c("wrong key", OK, auth=False, headers=(("X-API-Key", "wrong"),), status=401,
          code="invalid_api_key"),
        c("8 KB key", OK, auth=False, headers=(("X-API-Key", "k" * 8000),), status=401,
          code="invalid_api_key"),
        c("basic auth", OK, auth=False, headers=(("Authorization", "Basic dTpw"),),
          status=401, code="missing_api_key"),
        c("bearer without a key", OK, auth=False, headers=(("Authorization", "Bearer"),),
          status=401, code="missing_api_key"),
        c("two X-API-Key", OK, headers=(("X-API-Key", "second"),), status=400,
          code="ambiguous_header"),
        c("two Authorization", OK, headers=(("Authorization", "Bearer a"),
                                            ("Authorization", "Bearer b")),
          status=400, code="ambiguous_header"),
        c("X-API-Key and a different Bearer", OK, headers=(("Authorization", "Bearer other"),),
          status=400, code="ambiguous_header"),
        c("X-API-Key and a proxy's Basic", b'{"email": "proxy@example.com"}',
          headers=(("Authorization", "Basic dTpw"),)),
        c("two Content-Type", OK, headers=(("Content-Type", JSON),), status=400,
          code="ambiguous_header"),
        c("two Idempotency-Key", OK, headers=(("Idempotency-Key", "a"),
                                              ("Idempotency-Key", "b")),
          status=400, code="ambiguous_header"),
        c("two signature headers", OK, headers=(("webhook-signature", "v1,AAAA"),
                                                ("webhook-signature", "v1,BBBB")),
          status=400, code="ambiguous_header"),
        c("Idempotency-Key too long", OK, headers=(("Idempotency-Key", "k" * 256),),
          status=400, code="invalid_idempotency_key"),
        c("Idempotency-Key with a tab", OK, headers=(("Idempotency-Key", "a\tb"),),
          status=400, code="invalid_idempotency_key"),
        c("keyed request", b'{"email": "idem@example.com"}',
          headers=(("Idempotency-Key", "corpus-1"),)),
    ]


def _target(case: Case, hook: str, disabled: str) -> str:
    return case.path.format(hook=hook, test=hook + "/test", disabled=disabled)


async def test_adversarial_corpus_gets_only_documented_answers(
        served_env: dict[str, str], kafka_bootstrap: str, topics: Topics,
        tmp_path: Path) -> None:
    cases = corpus()
    assert len(cases) >= 60
    await ensure_topics(kafka_bootstrap, topics, 2)
    key = new_key()
    snap = replace(make_snapshot(keys=[ApiKeyHash(sha(key))]), filters=None,
                   fields_mode="exclude", fields_paths=())
    disabled = make_snapshot(keys=[ApiKeyHash(sha(key))], enabled=False)
    await publish_snapshots(kafka_bootstrap, topics, snap, disabled)
    served = ServedIngress({**served_env, "HOOKSTREAM_MAX_BODY_BYTES": str(MAX_BODY)},
                           free_port(), tmp_path / "ingress.log")
    served.start()
    answers: list[tuple[Case, int, dict[str, Any]]] = []
    try:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as client:
            for case in cases:
                headers: list[tuple[str, str]] = []
                if case.content_type is not None:
                    headers.append(("Content-Type", case.content_type))
                if case.auth:
                    headers.append(("X-API-Key", key))
                headers += case.headers
                url = _target(case, f"/v1/hooks/{snap.id}", f"/v1/hooks/{disabled.id}")
                try:
                    resp = await client.request(case.method, url, content=case.body,
                                                headers=headers)
                except httpx.TransportError as exc:
                    answers.append((case, -1, {"transport": repr(exc)}))
                    continue
                answers.append((case, resp.status_code, resp.json()))
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
        assert served.proc is not None and served.proc.poll() is None
    finally:
        served.stop()

    wrong = []
    for case, status, body in answers:
        if status == 202:
            ok = case.status == 202 and body["accepted"] >= 1
        else:
            ok = (status == case.status and body.get("error") in CODES.get(status, ())
                  and (case.code is None or body["error"] == case.code)
                  and body.get("detail") and body["error"] in ERRORS)
        if not ok:
            wrong.append((case.name, case.status, case.code, status, body))
    assert not wrong, wrong

    # Every 202 ends downstream: invitations or dead-letter records for each of its records.
    accepted = {body["event_id"]: (case.name, body["accepted"])
                for case, status, body in answers if status == 202}
    env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": topics.prefix, "HOOKSTREAM_VAR_DIR": str(tmp_path / "w"),
           "HOOKSTREAM_WORKER_PORT": str(free_port()), "HOOKSTREAM_TOPIC_PARTITIONS": "2",
           "HOOKSTREAM_MAX_BODY_BYTES": str(MAX_BODY)}
    worker = Worker(env, int(env["HOOKSTREAM_WORKER_PORT"]), tmp_path / "worker.log")
    worker.start()
    try:
        await worker.wait_ready(90)
        covered = await _downstream(kafka_bootstrap, topics, accepted, timeout=120)
        live, ready = await worker.probes()
        assert live == 200 and ready.status_code == 200, ready.text
    finally:
        worker.close()
    missing = {name: covered.get(e) for e, (name, n) in accepted.items()
               if not _covers(covered.get(e), n)}
    assert not missing, (missing, worker.log_tail())


WHOLE = "whole body"


async def _downstream(bootstrap: str, topics: Topics, accepted: dict[str, tuple[str, int]],
                      timeout: float) -> dict[str, set[int] | str]:
    """Per event id: the record indexes that became invitations (`due`) or dead letters,
    or WHOLE when the body as a whole went to the dead-letter topic. Read committed, until
    every accepted event is covered or `timeout`."""
    covered: dict[str, set[int] | str] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed",
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in (topics.due, topics.dlq) for p in range(2)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_covers(covered.get(e), n) for e, (_, n) in accepted.items()):
                break
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    headers = {k: v for k, v in record.headers}
                    if tp.topic == topics.due:
                        inv = codec.decode_as("InvitationRequested", record.value)
                        event, index = inv["event_id"], inv["record_index"]
                    else:
                        event = headers.get("request-id", b"").decode()
                        raw_index = headers.get("dlq-record-index")
                        if raw_index is None:
                            covered[event] = WHOLE
                            continue
                        index = int(raw_index)
                    seen = covered.setdefault(event, set())
                    if isinstance(seen, set):
                        seen.add(index)
    finally:
        await consumer.stop()
    return covered


def _covers(seen: set[int] | str | None, n: int) -> bool:
    return seen == WHOLE or seen == set(range(n))
