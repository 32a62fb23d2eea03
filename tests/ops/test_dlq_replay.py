"""`hookstream dlq replay` on the real broker: what lands on webhooks.raw, and the filters."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from typer.testing import CliRunner

from core.kafka.topics import Topics
from hookstream.cli import app

from .conftest import Rec, produce, read_all

DAY_MS = 86_400_000
T_OLD = 1_767_225_600_000  # 2026-01-01T00:00:00Z
T_NEW = T_OLD + 10 * DAY_MS  # 2026-01-11


def _dlq(automation: str, body: bytes, reason: str, at_ms: int, index: int | None,
         request_id: str, idem: str | None = None) -> Rec:
    headers = [("content-type", b"application/json"), ("received-at", str(at_ms - 5).encode()),
               ("request-id", request_id.encode())]
    if idem:
        headers.append(("idempotency-key", idem.encode()))
    headers += [("dlq-reason", reason.encode()), ("dlq-detail", b"A sentence for a person."),
                ("dlq-source", b"streams"), ("dlq-at", str(at_ms).encode())]
    if index is not None:
        headers.append(("dlq-record-index", str(index).encode()))
    return Rec(key=automation.encode(), value=body, headers=headers)


RECS = {
    "a_missing": _dlq("auto-A", b'{"naam": "x"}', "missing_email", T_OLD, 1, "ev-1", "idem-1"),
    "a_badjson": _dlq("auto-A", b"{not json", "bad_json", T_OLD, None, "ev-2"),
    "b_missing": _dlq("auto-B", b'{"email": ""}', "missing_email", T_NEW, 0, "ev-3"),
    "b_type": _dlq("auto-B", b'{"email": "b@example.org", "age": "x"}', "type_mismatch",
                   T_NEW + 1000, 2, "ev-4"),
}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _raw(bootstrap: str, topics: Topics) -> list:
    return asyncio.run(read_all(bootstrap, topics.raw))


def test_replay_republishes_with_original_headers_and_record_index(
        kafka_bootstrap: str, ready_topics: Topics, runner: CliRunner) -> None:
    asyncio.run(produce(kafka_bootstrap, ready_topics.dlq, list(RECS.values())))
    base = ["dlq", "replay", "--bootstrap", kafka_bootstrap, "--prefix", ready_topics.prefix]

    # Dry run: lists and counts, publishes nothing.
    dry = runner.invoke(app, [*base, "--automation", "auto-A", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would replay 2 of 4 dead-letter records (bad_json: 1, missing_email: 1)" in dry.output
    assert dry.output.count("would replay partition") == 2
    assert _raw(kafka_bootstrap, ready_topics) == []

    res = runner.invoke(app, [*base, "--automation", "auto-A"])
    assert res.exit_code == 0, res.output
    assert "replayed 2 of 4 dead-letter records" in res.output
    raw = {r.value: r for r in _raw(kafka_bootstrap, ready_topics)}
    assert set(raw) == {RECS["a_missing"].value, RECS["a_badjson"].value}

    one = raw[RECS["a_missing"].value]
    assert one.key == b"auto-A"
    assert list(one.headers) == [  # the raw contract's headers, nothing of the dlq-* ones
        ("content-type", b"application/json"), ("received-at", str(T_OLD - 5).encode()),
        ("request-id", b"ev-1"), ("idempotency-key", b"idem-1"), ("record-index", b"1")]
    whole = raw[RECS["a_badjson"].value]
    assert dict(whole.headers) == {"content-type": b"application/json",
                                   "received-at": str(T_OLD - 5).encode(),
                                   "request-id": b"ev-2"}  # whole body failed: no record-index


def test_replay_filters_by_reason_and_time(kafka_bootstrap: str, ready_topics: Topics,
                                           runner: CliRunner) -> None:
    asyncio.run(produce(kafka_bootstrap, ready_topics.dlq, list(RECS.values())))
    base = ["dlq", "replay", "--bootstrap", kafka_bootstrap, "--prefix", ready_topics.prefix,
            "--json"]

    by_reason = runner.invoke(app, [*base, "--reason", "type_mismatch"])
    assert by_reason.exit_code == 0, by_reason.output
    assert json.loads(by_reason.output) == {
        "scanned": 4, "replayed": 1, "by_reason": {"type_mismatch": 1},
        "by_automation": {"auto-B": 1}, "dry_run": False}
    raw = _raw(kafka_bootstrap, ready_topics)
    assert [(r.value, dict(r.headers)["record-index"]) for r in raw] == [
        (RECS["b_type"].value, b"2")]

    # since inclusive, until exclusive, on dlq-at: exactly b_missing.
    window = runner.invoke(app, [*base, "--since", _iso(T_NEW), "--until", _iso(T_NEW + 1000)])
    assert json.loads(window.output)["by_reason"] == {"missing_email": 1}
    both = runner.invoke(app, [*base, "--reason", "missing_email", "--reason", "bad_json",
                               "--until", _iso(T_NEW), "--dry-run"])
    doc = json.loads(both.output)
    assert (doc["replayed"], doc["by_automation"], doc["dry_run"]) == (2, {"auto-A": 2}, True)

    raw = _raw(kafka_bootstrap, ready_topics)
    assert sorted(r.value for r in raw) == sorted([RECS["b_type"].value,
                                                  RECS["b_missing"].value])

    bad = runner.invoke(app, [*base, "--since", "last week"])
    assert bad.exit_code == 1 and "ISO-8601" in bad.output
