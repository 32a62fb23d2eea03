"""`hookstream topics apply` on a real broker: creates the plan's topics with their configs,
reports drift on an existing topic without changing it, alters configs only when asked, and
never touches partitions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner, Result

from core.kafka.plan import admin_client, apply_plan, plan_from_settings
from core.kafka.topics import Topics
from core.settings import Settings, get_settings

DAY_MS = 86_400_000


async def describe(bootstrap: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Each topic's partition count and every config value."""
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        for _ in range(100):  # a new topic reaches every broker's metadata a moment later
            parts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
            if all(parts.get(n) for n in names):
                break
            await asyncio.sleep(0.1)
        out = {}
        for response in await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]):
            for res in response.to_object()["resources"]:
                out[res["resource_name"]] = (parts[res["resource_name"]], {
                    c["config_names"]: c["config_value"] for c in res["config_entries"]})
        return out
    finally:
        await admin.close()


async def create(bootstrap: str, topic: NewTopic) -> None:
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        await admin.create_topics([topic])
    finally:
        await admin.close()
    await describe(bootstrap, [topic.name])  # until the broker lists it


async def test_apply_creates_every_topic_with_its_configs(kafka_bootstrap: str,
                                                          topics: Topics) -> None:
    s = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topics.prefix,
                 topic_partitions=2, dlq_retention_days=45, max_body_bytes=3_000_000)
    plan = plan_from_settings(s)
    report = await apply_plan(kafka_bootstrap, plan)
    assert sorted(report.created) == sorted(topics.all())
    assert report.drift == [] and report.missing == []

    got = await describe(kafka_bootstrap, topics.all())
    assert got[topics.raw][0] == 2 and got[topics.config][0] == 1
    assert got[topics.scheduler_changelog][0] == 2
    assert got[topics.scheduler_changelog][1]["cleanup.policy"] == "compact"
    assert got[topics.config][1]["cleanup.policy"] == "compact"
    assert got[topics.dlq][1]["retention.ms"] == str(45 * DAY_MS)
    assert got[topics.outcomes][1]["retention.ms"] == str(30 * DAY_MS)
    assert got[topics.raw][1]["max.message.bytes"] == str(3_000_000 + 65536)
    assert got[topics.raw][1]["min.insync.replicas"] == "1"

    again = await apply_plan(kafka_bootstrap, plan)
    assert (again.created, again.drift, again.fixed) == ([], [], [])


async def test_the_changelog_follows_the_delay_topics_partitions(kafka_bootstrap: str,
                                                                 topics: Topics) -> None:
    await create(kafka_bootstrap, NewTopic(topics.scheduled, 5, 1))
    s = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topics.prefix, topic_partitions=2)
    report = await apply_plan(kafka_bootstrap, plan_from_settings(s))
    got = await describe(kafka_bootstrap, [topics.scheduled, topics.scheduler_changelog])
    assert got[topics.scheduler_changelog][0] == 5  # the store of each delay partition
    # The delay topic itself differs from the plan: reported, and left as it is.
    assert [(d.topic, d.item, d.planned, d.actual) for d in report.drift
            if d.item == "partitions"] == [(topics.scheduled, "partitions", "2", "5")]


async def test_missing_topics_are_named_when_creation_is_off(kafka_bootstrap: str,
                                                             topics: Topics) -> None:
    s = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topics.prefix)
    report = await apply_plan(kafka_bootstrap, plan_from_settings(s), create=False)
    assert sorted(report.missing) == sorted(topics.all()) and report.created == []
    got = await describe_existing(kafka_bootstrap, topics.prefix)
    assert got == []  # nothing created, not even by a metadata request


async def describe_existing(bootstrap: str, prefix: str) -> list[str]:
    admin = admin_client(bootstrap)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str,
            topics: Topics) -> Iterator[None]:
    monkeypatch.setenv("HOOKSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("HOOKSTREAM_TOPIC_PREFIX", topics.prefix)
    monkeypatch.setenv("HOOKSTREAM_TOPIC_PARTITIONS", "2")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def apply_cli(*args: str) -> Result:
    from hookstream.cli import app

    return CliRunner().invoke(app, ["topics", "apply", *args])


def test_drift_is_reported_not_changed_until_asked(cli_env: None, kafka_bootstrap: str,
                                                   topics: Topics) -> None:
    # A dead-letter topic someone made by hand: short retention, one partition, and a
    # topic config of their own.
    asyncio.run(create(kafka_bootstrap, NewTopic(
        topics.dlq, 1, 1, topic_configs={"retention.ms": "3600000", "segment.ms": "7200000"})))

    first = apply_cli()
    assert first.exit_code == 2, first.output  # drift remains
    assert f"created {topics.raw}" in first.output
    assert (f"drift   {topics.dlq}: retention.ms is 3600000, the plan says {30 * DAY_MS}"
            in first.output)
    assert f"drift   {topics.dlq}: partitions is 1, the plan says 2" in first.output
    got = asyncio.run(describe(kafka_bootstrap, [topics.dlq]))[topics.dlq]
    assert got[1]["retention.ms"] == "3600000"  # not changed silently

    fixed = apply_cli("--fix-configs")
    assert fixed.exit_code == 2, fixed.output  # the partitions are a person's decision
    assert f"fixed   {topics.dlq}: retention.ms is 3600000" in fixed.output
    partitions, configs = asyncio.run(describe(kafka_bootstrap, [topics.dlq]))[topics.dlq]
    assert configs["retention.ms"] == str(30 * DAY_MS)
    assert configs["segment.ms"] == "7200000"  # their own config kept
    assert partitions == 1  # never changed

    last = apply_cli("--json")
    assert last.exit_code == 2
    assert '"item": "partitions"' in last.output and '"item": "retention.ms"' not in last.output
