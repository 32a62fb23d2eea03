"""The topic plan from settings (pure: no broker), and /readyz naming why a check fails."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from typer.testing import CliRunner

from core.kafka.plan import (
    RECORD_OVERHEAD_BYTES,
    TopicGate,
    build_plan,
    format_plan,
    plan_from_settings,
)
from core.kafka.topics import Topics
from core.serving import Failed, readiness
from core.settings import Settings

DAY_MS = 86_400_000


def by_name(settings: Settings) -> dict[str, dict[str, object]]:
    return {t.name: {"partitions": t.partitions, "rf": t.replication_factor, **t.configs,
                     "with": t.copartitioned_with}
            for t in plan_from_settings(settings)}


def test_defaults_fit_one_local_broker() -> None:
    s = Settings(topic_prefix="p.")
    plan = by_name(s)
    t = Topics("p.")
    assert set(plan) == set(t.all())
    assert {p["rf"] for p in plan.values()} == {1}
    assert {p.get("min.insync.replicas") for p in plan.values()} == {"1", None}
    assert plan[t.faust_leader].get("min.insync.replicas") is None  # nothing is written to it
    # The dead-letter topic and the outcomes are kept long (issue 15: the DLQ's retention is a
    # setting, long by default); samples and counts short as before.
    assert plan[t.dlq]["retention.ms"] == str(30 * DAY_MS)
    assert plan[t.outcomes]["retention.ms"] == str(30 * DAY_MS)
    assert plan[t.samples]["retention.ms"] == str(3_600_000)
    assert plan[t.counts]["retention.ms"] == str(2 * DAY_MS)
    for name in (t.raw, t.scheduled, t.due, t.errors):
        assert plan[name]["retention.ms"] == str(7 * DAY_MS)
        assert plan[name]["cleanup.policy"] == "delete"


def test_production_settings_replicate_and_require_two_in_sync() -> None:
    s = Settings(topic_prefix="p.", kafka_replication_factor=3, kafka_min_insync_replicas=2,
                 topic_partitions=6, dlq_retention_days=90, outcomes_retention_days=0)
    plan = by_name(s)
    t = Topics("p.")
    assert {p["rf"] for p in plan.values()} == {3}
    assert {name for name, p in plan.items() if p.get("min.insync.replicas") != "2"} == \
        {t.faust_leader}
    assert plan[t.raw]["partitions"] == 6
    assert plan[t.config]["partitions"] == 1  # one order of snapshots
    assert plan[t.dlq]["retention.ms"] == str(90 * DAY_MS)
    assert plan[t.outcomes]["retention.ms"] == "-1"  # 0 days: kept for ever


def test_compacted_stores_are_never_deleted() -> None:
    plan = by_name(Settings(topic_prefix="p."))
    t = Topics("p.")
    for name in (t.config, t.scheduler_changelog):
        assert plan[name]["cleanup.policy"] == "compact"  # not "compact,delete"
        assert "retention.ms" not in plan[name]
    # The changelog is the scheduler's store of the delay topic: the same partitions.
    assert plan[t.scheduler_changelog]["with"] == t.scheduled
    assert plan[t.scheduler_changelog]["partitions"] == plan[t.scheduled]["partitions"]


def test_topics_with_bodies_admit_the_largest_body_the_ingress_accepts() -> None:
    s = Settings(topic_prefix="p.", max_body_bytes=5 * 1024 * 1024)
    plan = by_name(s)
    t = Topics("p.")
    limit = str(5 * 1024 * 1024 + RECORD_OVERHEAD_BYTES)
    for name in (t.raw, t.scheduled, t.scheduler_changelog, t.due, t.dlq, t.samples):
        assert plan[name]["max.message.bytes"] == limit, name
    assert "max.message.bytes" not in plan[t.counts]


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot exceed the replication factor"):
        plan_from_settings(Settings(kafka_replication_factor=1, kafka_min_insync_replicas=2))


def test_table_shows_every_column() -> None:
    text = format_plan(build_plan(Topics("p."), replication_factor=3, min_insync_replicas=2))
    header, *rows = text.splitlines()
    assert header.split() == ["TOPIC", "PARTITIONS", "RF", "CLEANUP", "RETENTION", "MIN.ISR",
                              "MAX.MESSAGE.BYTES", "OTHER"]
    dlq = next(r for r in rows if r.startswith("p.webhooks.dlq "))
    assert dlq.split()[1:7] == ["3", "3", "delete", "30d", "2", str(1024 * 1024 + 65536)]
    changelog = next(r for r in rows if r.startswith("p.streams.scheduler-changelog "))
    assert "never deleted" in changelog and "partitions as p.invitations.scheduled" in changelog


def test_cli_plan_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings
    from hookstream.cli import app

    monkeypatch.setenv("HOOKSTREAM_TOPIC_PREFIX", "cli.")
    monkeypatch.setenv("HOOKSTREAM_KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("HOOKSTREAM_KAFKA_MIN_INSYNC_REPLICAS", "2")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["topics", "plan", "--json"])
        monkeypatch.setenv("HOOKSTREAM_KAFKA_MIN_INSYNC_REPLICAS", "4")
        get_settings.cache_clear()
        bad = CliRunner().invoke(app, ["topics", "plan"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    topics = {t["name"]: t for t in json.loads(result.output)["topics"]}
    assert topics["cli.webhooks.raw"]["replication_factor"] == 3
    assert topics["cli.webhooks.raw"]["configs"]["min.insync.replicas"] == "2"
    assert topics["cli.webhooks.raw"]["why"]
    assert bad.exit_code == 1 and "cannot exceed" in bad.output


def test_a_failed_check_says_why_on_readyz() -> None:
    gate = TopicGate(Settings(topic_prefix="p."))
    gate.missing = ["p.webhooks.raw"]

    async def answer() -> tuple[int, dict[str, object]]:
        response = await readiness(lambda: {"topics": gate.check(), "other": True})
        return response.status_code, orjson.loads(response.body)

    status, body = asyncio.run(answer())
    assert status == 503
    assert body["checks"] == {"topics": False, "other": True}
    assert body["reasons"] == {"topics": "missing topic p.webhooks.raw"}
    assert body["detail"] == "not ready: topics (missing topic p.webhooks.raw)"
    assert not Failed("x") and str(Failed("x")) == "x"
