"""`hookstream lag` and LagCollector against a real consumer group on the real broker."""

from __future__ import annotations

import asyncio
import json

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from core.kafka.lag import LagCollector, LagReader, hookstream_groups
from core.kafka.topics import Topics
from hookstream.cli import app

from .conftest import Rec, produce

PRODUCED = {0: 10, 1: 10, 2: 10}  # N = 30 records, per partition
CONSUMED = {0: 10, 1: 4}  # M = 14; partition 2: the group never committed there


async def _consume_and_commit(bootstrap: str, topic: str, group: str) -> None:
    """A consumer in `group` reads exactly CONSUMED[p] records of each partition and commits."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        for p, want in CONSUMED.items():
            tp = TopicPartition(topic, p)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got = []
            for _ in range(50):
                got += (await consumer.getmany(tp, timeout_ms=200, max_records=want - len(got))
                        ).get(tp, [])
                if len(got) >= want:
                    break
            assert len(got) == want
            await consumer.commit({tp: got[-1].offset + 1})
    finally:
        await consumer.stop()


def _setup(bootstrap: str, topics: Topics) -> str:
    group = f"{topics.prefix}ops-lag-test"
    recs = [Rec(key=f"k{p}-{i}".encode(), value=b"{}", partition=p)
            for p, n in PRODUCED.items() for i in range(n)]
    asyncio.run(produce(bootstrap, topics.raw, recs))
    asyncio.run(_consume_and_commit(bootstrap, topics.raw, group))
    return group


def test_lag_json_reports_n_minus_m(kafka_bootstrap: str, ready_topics: Topics,
                                     runner: CliRunner) -> None:
    group = _setup(kafka_bootstrap, ready_topics)
    base = ["lag", "--bootstrap", kafka_bootstrap, "--prefix", ready_topics.prefix]

    res = runner.invoke(app, [*base, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    rows = {(p["group"], p["topic"], p["partition"]): p for p in doc["partitions"]}
    assert set(rows) == {(group, ready_topics.raw, p) for p in PRODUCED}  # only our prefix
    for p, n in PRODUCED.items():
        row = rows[(group, ready_topics.raw, p)]
        assert row["end"] == n
        assert row["lag"] == n - CONSUMED.get(p, 0)
        assert row["committed"] == CONSUMED.get(p)  # None where never committed
    n_total, m_total = sum(PRODUCED.values()), sum(CONSUMED.values())
    assert doc["total"] == n_total - m_total == 16
    assert doc["max_lag"] == 10
    assert [g["group"] for g in doc["groups"]] == [group]
    assert doc["groups"][0]["lag"] == 16

    # --max-lag is an alert check: status 2 above the threshold, 0 at or below it.
    above = runner.invoke(app, [*base, "--json", "--max-lag", "9"])
    assert above.exit_code == 2, above.output
    assert json.loads(above.output)["exceeded"] is True
    assert runner.invoke(app, [*base, "--max-lag", "10"]).exit_code == 0
    assert runner.invoke(app, [*base, "--max-lag", "100"]).exit_code == 0

    # The table: one line per partition, the totals, the flagged partitions.
    table = runner.invoke(app, [*base, "--max-lag", "5"])
    assert table.exit_code == 2
    assert "total lag: 16" in table.output
    assert f"group {group}: lag 16" in table.output
    assert "10 !" in table.output and "LAG ABOVE 5" in table.output

    # --group filter: an unknown group shows nothing; ours shows its rows.
    other = runner.invoke(app, [*base, "--json", "--group", "no-such-group"])
    assert json.loads(other.output)["total"] == 0
    mine = runner.invoke(app, [*base, "--json", "--group", group])
    assert json.loads(mine.output)["total"] == 16

    # --watch --times 2: two refreshes, each a JSON document.
    watched = runner.invoke(app, [*base, "--json", "--watch", "--interval", "0.1", "--times", "2"])
    assert watched.exit_code == 0
    docs = [json.loads(line) for line in watched.output.splitlines()]
    assert [d["total"] for d in docs] == [16, 16]


def test_lag_unreachable_broker_is_a_clear_error(runner: CliRunner) -> None:
    res = runner.invoke(app, ["lag", "--bootstrap", "127.0.0.1:1", "--json"])
    assert res.exit_code == 1
    assert "cannot read consumer lag from Kafka at 127.0.0.1:1" in res.output


def test_lag_collector_exports_the_gauge(kafka_bootstrap: str, ready_topics: Topics) -> None:
    group = _setup(kafka_bootstrap, ready_topics)
    collector = LagCollector(kafka_bootstrap, prefix=ready_topics.prefix)
    registry = CollectorRegistry()
    registry.register(collector)

    async def run_until_read() -> None:
        await collector.start()  # the background refresher a service would run
        try:
            for _ in range(100):  # bounded: at most 10 s
                if collector.report.partitions:
                    return
                await asyncio.sleep(0.1)
        finally:
            await collector.stop()

    asyncio.run(run_until_read())
    text = generate_latest(registry).decode()
    for p, n in PRODUCED.items():
        line = (f'hookstream_consumer_lag{{group="{group}",partition="{p}",'
                f'topic="{ready_topics.raw}"}} {float(n - CONSUMED.get(p, 0))}')
        assert line in text, text


def test_lag_reads_only_the_groups_named_as_hookstreams(kafka_bootstrap: str,
                                                        ready_topics: Topics) -> None:
    """The worker's collector (group_prefix = hookstream_groups) leaves out a group named
    otherwise even when it committed on our topics: on a shared cluster most groups are
    someone else's, and fetching each one's offsets every 15 s costs two requests a group."""
    foreign = _setup(kafka_bootstrap, ready_topics)  # `<prefix>ops-lag-test`: not ours
    ours = hookstream_groups(ready_topics.prefix) + "notifier"
    asyncio.run(_consume_and_commit(kafka_bootstrap, ready_topics.raw, ours))

    async def read() -> tuple[set[str], set[str]]:
        async with LagReader(kafka_bootstrap) as reader:
            every = await reader.read(ready_topics.prefix)
            named = await reader.read(ready_topics.prefix,
                                      group_prefix=hookstream_groups(ready_topics.prefix))
        return ({p.group for p in every.partitions}, {p.group for p in named.partitions})

    every, named = asyncio.run(read())
    assert {foreign, ours} <= every  # without the filter both show (the `hookstream lag` view)
    assert named == {ours}
