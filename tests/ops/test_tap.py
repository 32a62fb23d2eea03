"""`hookstream tap` on the real broker: Avro files any reader opens, JSON lines, filters."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
from typer.testing import CliRunner

from core.kafka.topics import Topics
from hookstream.cli import app
from ops.reading import resolve_topic
from ops.tap import JsonLinesSink, tap
from schemas.codec import encode

from .conftest import Rec, produce

T0 = datetime(2026, 3, 1, 9, 30, 15, 123000, tzinfo=UTC)


def invitation(i: int, automation: str = "a-1") -> dict[str, Any]:
    return {
        "invitation_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"inv-{i}")),
        "automation_id": automation,
        "automation_version": 3 + i,
        "survey_id": "s-9",
        "event_id": f"ev-{i}",
        "record_index": i,
        "email": f"r{i}@example.org",
        "variables": {"name": f"Ré {i}", "age": 30 + i, "score": 7.5, "vip": i % 2 == 0,
                      "city": None, "joined": "2025-12-31"},
        "received_at": T0 + timedelta(seconds=i),
        "due_at": T0 + timedelta(days=1, seconds=i),
        "delay_days": 1,
    }


def _produce_invitations(bootstrap: str, topic: str, invs: list[dict[str, Any]]) -> None:
    asyncio.run(produce(bootstrap, topic, [
        Rec(key=inv["invitation_id"].encode(), value=encode("InvitationRequested", inv),
            headers=[("trace", b"t-%d" % n)], partition=n % 3)
        for n, inv in enumerate(invs)]))


def _base(bootstrap: str, topics: Topics) -> list[str]:
    return ["--bootstrap", bootstrap, "--prefix", topics.prefix]


def test_tap_due_to_avro_file_read_back_with_fastavro_alone(
        kafka_bootstrap: str, ready_topics: Topics, runner: CliRunner, tmp_path: Path) -> None:
    invs = [invitation(i) for i in range(7)]
    _produce_invitations(kafka_bootstrap, ready_topics.due, invs)
    out = tmp_path / "due.avro"

    res = runner.invoke(app, ["tap", "invitations.due", "--out", str(out),
                              *_base(kafka_bootstrap, ready_topics)])
    assert res.exit_code == 0, res.output
    assert "wrote 7 InvitationRequested records" in res.output

    # Only fastavro and the file: the schema travels in the file's header.
    with out.open("rb") as fo:
        reader = fastavro.reader(fo)
        assert reader.writer_schema["name"] == "io.hookstream.InvitationRequested"
        assert reader.metadata["hookstream.topic"] == ready_topics.due
        got = {r["invitation_id"]: r for r in reader}
    assert set(got) == {inv["invitation_id"] for inv in invs}
    for inv in invs:
        assert got[inv["invitation_id"]] == inv  # every field, typed (timestamps aware, UTC)

    # --max N stops after N records.
    capped = tmp_path / "capped.avro"
    res = runner.invoke(app, ["tap", "invitations.due", "--out", str(capped), "--max", "3",
                              *_base(kafka_bootstrap, ready_topics)])
    assert res.exit_code == 0, res.output
    with capped.open("rb") as fo:
        rows = list(fastavro.reader(fo))
    assert len(rows) == 3 and all(r in invs for r in rows)


def test_tap_json_lines_with_key_and_max(kafka_bootstrap: str, ready_topics: Topics,
                                         runner: CliRunner) -> None:
    invs = [invitation(i) for i in range(6)]
    wanted = invs[4]["invitation_id"]
    invs.append({**invitation(9), "invitation_id": wanted, "email": "again@example.org"})
    _produce_invitations(kafka_bootstrap, ready_topics.due, invs)
    base = _base(kafka_bootstrap, ready_topics)

    res = runner.invoke(app, ["tap", "invitations.due", "--key", wanted, *base])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.output.splitlines()]
    assert [ln["key"] for ln in lines] == [wanted, wanted]
    assert sorted(ln["value"]["email"] for ln in lines) == ["again@example.org", "r4@example.org"]
    first = next(ln for ln in lines if ln["value"]["email"] == "r4@example.org")
    assert first["schema"] == "InvitationRequested"
    assert first["topic"] == ready_topics.due
    assert first["partition"] == 4 % 3 and isinstance(first["offset"], int)
    assert first["headers"] == {"trace": "t-4"}
    assert first["value"]["received_at"] == (T0 + timedelta(seconds=4)).isoformat()
    assert first["value"]["variables"] == invs[4]["variables"]
    datetime.fromisoformat(first["timestamp"])  # the record's timestamp, ISO-8601

    one = runner.invoke(app, ["tap", "invitations.due", "--key", wanted, "--max", "1", *base])
    assert one.exit_code == 0 and len(one.output.splitlines()) == 1
    allr = runner.invoke(app, ["tap", ready_topics.due, "--max", "5", *base])  # full name works
    assert allr.exit_code == 0 and len(allr.output.splitlines()) == 5


def test_tap_from_timestamp_and_end(kafka_bootstrap: str, ready_topics: Topics,
                                    runner: CliRunner) -> None:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    old, new = now_ms - 3_600_000, now_ms - 60_000
    asyncio.run(produce(kafka_bootstrap, ready_topics.due, [
        Rec(key=b"old", value=encode("InvitationRequested", invitation(0)), partition=0,
            timestamp_ms=old),
        Rec(key=b"new", value=encode("InvitationRequested", invitation(1)), partition=0,
            timestamp_ms=new)]))
    base = _base(kafka_bootstrap, ready_topics)
    between = datetime.fromtimestamp((old + new) / 2000, UTC).isoformat()
    res = runner.invoke(app, ["tap", "invitations.due", "--from", between, *base])
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["key"] for line in res.output.splitlines()] == ["new"]
    end = runner.invoke(app, ["tap", "invitations.due", "--from", "end", *base])
    assert end.exit_code == 0 and end.output == ""
    bad = runner.invoke(app, ["tap", "invitations.due", "--from", "yesterday", *base])
    assert bad.exit_code == 1 and "ISO-8601" in bad.output


def test_tap_raw_bodies_text_or_base64_and_not_avro(
        kafka_bootstrap: str, ready_topics: Topics, runner: CliRunner, tmp_path: Path) -> None:
    body = '[{"email": "a@example.org", "naam": "Zoë"}]'.encode()
    binary = b"\xff\xfe not utf-8"
    asyncio.run(produce(kafka_bootstrap, ready_topics.dlq, [
        Rec(key=b"auto-1", value=body, partition=0,
            headers=[("content-type", b"application/json"), ("dlq-reason", b"missing_email")]),
        Rec(key=b"auto-1", value=binary, partition=0,
            headers=[("dlq-reason", b"bad_json")])]))
    base = _base(kafka_bootstrap, ready_topics)
    res = runner.invoke(app, ["tap", "webhooks.dlq", *base])
    assert res.exit_code == 0, res.output
    a, b = (json.loads(line) for line in res.output.splitlines())
    assert (a["value"], a["encoding"]) == (body.decode(), "text")
    assert a["headers"] == {"content-type": "application/json", "dlq-reason": "missing_email"}
    assert (b["value"], b["encoding"]) == (base64.b64encode(binary).decode(), "base64")

    refused = runner.invoke(app, ["tap", "webhooks.dlq", "--out", str(tmp_path / "x.avro"),
                                  *base])
    assert refused.exit_code == 1
    assert "not Avro" in refused.output
    assert not (tmp_path / "x.avro").exists()

    missing = runner.invoke(app, ["tap", "invitations.due", "--prefix", "nope-nothing.",
                                  "--bootstrap", kafka_bootstrap, "--out",
                                  str(tmp_path / "none.avro")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert not (tmp_path / "none.avro").exists()  # no empty file that looks like a result


async def test_tap_follow_sees_records_written_after_it_started(
        kafka_bootstrap: str, ready_topics: Topics, tmp_path: Path) -> None:
    await produce(kafka_bootstrap, ready_topics.due, [
        Rec(key=b"before", value=encode("InvitationRequested", invitation(0)), partition=0)])
    full, short = resolve_topic("invitations.due", ready_topics.prefix)
    out_path = tmp_path / "follow.jsonl"
    with out_path.open("w") as out:
        task = asyncio.create_task(tap(kafka_bootstrap, full, short, "beginning",
                                       JsonLinesSink(out, short), follow=True, max_records=3))
        await asyncio.sleep(0.5)
        assert not task.done()  # following: it waits for more
        await produce(kafka_bootstrap, ready_topics.due, [
            Rec(key=b"after", value=encode("InvitationRequested", invitation(i)), partition=i)
            for i in (1, 2)])
        result = await asyncio.wait_for(task, 20)
    assert result.written == 3
    keys = [json.loads(line)["key"] for line in out_path.read_text().splitlines()]
    assert sorted(keys) == ["after", "after", "before"]
