"""Dead-letter replay end to end with the real streams worker (`hookstream worker`).

An automation maps `age` onto a number variable; records with a non-numeric age go to the
DLQ. The automation is fixed (the field is skipped), the DLQ is replayed, and every record
has exactly one invitation, with the id derived from (automation, event, index). A second
replay adds no new invitation id (a repeated id is one invitation: the notifier sends an
id once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from automations.ids import invitation_id
from automations.snapshot import AutomationSnapshot, FieldMapping, MessageTemplate, Variable
from core.kafka.lag import read_lag
from core.kafka.topics import Topics
from hookstream.cli import app
from hookstream.local.kafka import free_port
from schemas import codec

from .conftest import Rec, produce, read_all

ROOT = Path(__file__).resolve().parents[2]
HOOKSTREAM = ROOT / ".venv" / "bin" / "hookstream"


def snapshot(automation_id: str, version: int, age_variable: str | None) -> AutomationSnapshot:
    return AutomationSnapshot(
        id=automation_id, version=version, name="Replay test", survey_id="survey-1",
        survey_name="Survey", enabled=True,
        message=MessageTemplate("msg-1", "Invite", "Hi", "Hello {{ name }}"),
        variables=(Variable("name", "text"), Variable("age", "number")),
        email_field="email", fields_mode="exclude", fields_paths=(), filters=None,
        mapping=(FieldMapping("name", "name"), FieldMapping("age", age_variable)),
        delay_days=0, error_notifications_enabled=False, error_recipients=(), api_keys=(),
        updated_at=datetime.now(UTC))


def config_rec(snap: AutomationSnapshot) -> Rec:
    return Rec(key=snap.id.encode(), value=codec.encode("AutomationSnapshot", snap.to_record()))


def raw_rec(automation_id: str, event_id: str, payload: object) -> Rec:
    return Rec(key=automation_id.encode(), value=orjson.dumps(payload), headers=[
        ("content-type", b"application/json"),
        ("received-at", str(int(time.time() * 1000)).encode()),
        ("request-id", event_id.encode()), ("idempotency-key", f"idem-{event_id}".encode())])


@pytest.fixture
def worker(kafka_bootstrap: str, ready_topics: Topics, tmp_path: Path) -> Iterator[int]:
    """`hookstream worker` as a subprocess on a free port; stopped by its pid."""
    port = free_port()
    env = {**os.environ, "HOOKSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "HOOKSTREAM_TOPIC_PREFIX": ready_topics.prefix, "HOOKSTREAM_WORKER_PORT": str(port),
           "HOOKSTREAM_VAR_DIR": str(tmp_path / "var"), "HOOKSTREAM_TOPIC_PARTITIONS": "3"}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(HOOKSTREAM), "worker", "--loglevel", "warn"], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"worker exited:\n{log_path.read_text()[-3000:]}"
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass  # not listening yet
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.2)
            yield port
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def due_ids(bootstrap: str, topics: Topics, automation_id: str) -> Counter[str]:
    recs = asyncio.run(read_all(bootstrap, topics.due))
    return Counter(inv["invitation_id"] for inv in
                   (codec.decode_as("InvitationRequested", r.value) for r in recs)
                   if inv["automation_id"] == automation_id)


def raw_caught_up(bootstrap: str, topics: Topics) -> bool:
    """The worker's raw group has committed up to the end of every raw partition."""
    report = asyncio.run(read_lag(bootstrap, topics.prefix))
    rows = [p for p in report.partitions if p.topic == topics.raw and p.group.endswith(".raw")]
    return len(rows) == 3 and all(p.lag == 0 for p in rows)


async def _raw_group_stable(bootstrap: str, group: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (resp,) = await admin.describe_consumer_groups([group])
        # (error_code, group_id, state, protocol_type, protocol, members, ...)
        return any(g[2] == "Stable" and g[5] for g in resp.groups)
    finally:
        await admin.close()


def test_fix_replay_one_invitation_per_record(kafka_bootstrap: str, ready_topics: Topics,
                                              worker: int, runner: CliRunner) -> None:
    t, a = ready_topics, "auto-replay"
    # /readyz says the raw loop has partitions; wait for its group to be stable too, so this
    # test is about replay, not about the worker's start-up rebalance.
    wait_for("the worker's raw group to be assigned", lambda: asyncio.run(
        _raw_group_stable(kafka_bootstrap, f"{t.prefix}hookstream-streams.raw")))
    asyncio.run(produce(kafka_bootstrap, t.config, [config_rec(snapshot(a, 1, "age"))]))
    asyncio.run(produce(kafka_bootstrap, t.raw, [
        raw_rec(a, "ev-1", [{"email": "a@example.org", "name": "A", "age": 30},
                            {"email": "b@example.org", "name": "B", "age": "old"},
                            {"email": "c@example.org", "name": "C", "age": 41}]),
        raw_rec(a, "ev-2", {"email": "d@example.org", "name": "D", "age": "unknown"})]))
    expected = {invitation_id(a, "ev-1", i) for i in range(3)} | {invitation_id(a, "ev-2", 0)}

    dlq: list = []

    def two_in_dlq() -> bool:
        dlq[:] = asyncio.run(read_all(kafka_bootstrap, t.dlq))
        return len(dlq) >= 2

    wait_for("two records in the DLQ", two_in_dlq)
    assert sorted((dict(r.headers)["request-id"], dict(r.headers)["dlq-record-index"],
                   dict(r.headers)["dlq-reason"]) for r in dlq) == [
        (b"ev-1", b"1", b"type_mismatch"), (b"ev-2", b"0", b"type_mismatch")]
    # The worker's /metrics counts the dead letters by reason.
    metrics = httpx.get(f"http://127.0.0.1:{worker}/metrics", timeout=5).text
    assert 'hookstream_dlq_records_total{reason="type_mismatch"} 2.0' in metrics
    wait_for("the valid records' invitations",
             lambda: sum(due_ids(kafka_bootstrap, t, a).values()) >= 2)
    assert set(due_ids(kafka_bootstrap, t, a)) == {invitation_id(a, "ev-1", 0),
                                                   invitation_id(a, "ev-1", 2)}

    # The fix: `age` is skipped. A probe automation published after it on the (single
    # partition, ordered) config topic tells when the worker has read the fix.
    probe = snapshot("auto-probe", 1, None)
    asyncio.run(produce(kafka_bootstrap, t.config,
                        [config_rec(snapshot(a, 2, None)), config_rec(probe)]))
    n = 0

    def probe_accepted() -> bool:
        nonlocal n
        n += 1
        asyncio.run(produce(kafka_bootstrap, t.raw,
                            [raw_rec(probe.id, f"probe-{n}", {"email": "p@example.org"})]))
        time.sleep(0.3)
        return bool(due_ids(kafka_bootstrap, t, probe.id))

    wait_for("the fixed configuration to reach the worker", probe_accepted)

    base = ["dlq", "replay", "--automation", a, "--bootstrap", kafka_bootstrap,
            "--prefix", t.prefix]
    res = runner.invoke(app, base)
    assert res.exit_code == 0, res.output
    if "replayed 2 of" not in res.output:  # show what the DLQ holds, to see why
        print(runner.invoke(app, ["tap", "webhooks.dlq", "--bootstrap", kafka_bootstrap,
                                  "--prefix", t.prefix]).output)
    assert "replayed 2 of" in res.output and "type_mismatch: 2" in res.output
    wait_for("one invitation per record", lambda: set(due_ids(kafka_bootstrap, t, a)) == expected)
    wait_for("the worker to finish the replay", lambda: raw_caught_up(kafka_bootstrap, t))
    first = due_ids(kafka_bootstrap, t, a)
    assert set(first) == expected and all(c == 1 for c in first.values()), first
    dlq_after = [r for r in asyncio.run(read_all(kafka_bootstrap, t.dlq)) if r.key == a.encode()]
    assert len(dlq_after) == 2  # the replayed records did not fail again

    # Second replay: the same ids come out again; no new invitation exists.
    res = runner.invoke(app, base)
    assert res.exit_code == 0 and "replayed 2 of" in res.output
    wait_for("the worker to finish the second replay",
             lambda: raw_caught_up(kafka_bootstrap, t))
    second = due_ids(kafka_bootstrap, t, a)
    assert set(second) == expected
    assert len([r for r in asyncio.run(read_all(kafka_bootstrap, t.dlq))
                if r.key == a.encode()]) == 2
