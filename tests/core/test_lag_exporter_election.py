"""Lag counted once: three real lag collectors (each a process, as three workers would run
them) on the session broker elect one exporter through their Kafka consumer group. Exactly
one serves `hookstream_consumer_lag` at a time; SIGKILLed, another takes over once the group
coordinator drops it (session timeout); stopped cleanly, another takes over at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from core.kafka import clients
from core.kafka.topics import Topics, ensure_topics
from hookstream.local.kafka import free_ports
from streams.app import lag_exporter_group
from tests.support.processes import stop

REPO = Path(__file__).resolve().parents[2]
SESSION_MS, HEARTBEAT_MS = 6_000, 1_000
# After a SIGKILL: the session timeout, the survivors' next heartbeat, the rejoin and one lag
# read (interval 1 s); the rest is slack for a loaded 2-core machine.
TAKEOVER_AFTER_KILL_S = SESSION_MS / 1000 + 9
TAKEOVER_AFTER_STOP_S = 6  # a clean stop leaves the group: rebalance at once
PRODUCED, COMMITTED = 5, 2  # on partition 0 of the raw topic: lag 3


async def _lagging_group(bootstrap: str, topics: Topics) -> str:
    await ensure_topics(bootstrap, topics, partitions=3)
    producer = clients.producer(bootstrap)
    await producer.start()
    try:
        for i in range(PRODUCED):
            await producer.send_and_wait(topics.raw, b"{}", key=f"k{i}".encode(), partition=0)
    finally:
        await producer.stop()
    group = f"{topics.prefix}lag-election-test"
    consumer = clients.consumer(bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topics.raw, 0)
        consumer.assign([tp])
        await consumer.commit({tp: COMMITTED})
    finally:
        await consumer.stop()
    return group


async def _stable_members(bootstrap: str, group: str) -> int:
    """Members of `group` once it is Stable (0 while it rebalances or is empty)."""
    admin = clients.admin(bootstrap)
    await admin.start()
    try:
        for resp in await admin.describe_consumer_groups([group]):
            for g in resp.groups:  # (error_code, group_id, state, protocol_type, protocol, members)
                if g[2] == "Stable":
                    return len(g[5])
        return 0
    finally:
        await admin.close()


def _wait_for_members(bootstrap: str, group: str, n: int, within: float) -> float:
    started = time.monotonic()
    while (members := asyncio.run(_stable_members(bootstrap, group))) != n:
        assert members <= n and time.monotonic() - started < within, \
            f"{group}: {members} stable members, not {n}, after {within} s"
        time.sleep(0.3)
    return time.monotonic() - started


def _scrape(port: int) -> tuple[dict[tuple[str, str, str], float], float | None]:
    """(lag series by (group, topic, partition), hookstream_lag_exporter) of one process, or
    ({}, None) when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}, None
    lag: dict[tuple[str, str, str], float] = {}
    leader = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "hookstream_consumer_lag":
                lag[(s.labels["group"], s.labels["topic"], s.labels["partition"])] = s.value
            elif s.name == "hookstream_lag_exporter":
                leader = s.value
    return lag, leader


@pytest.fixture
def exporters(kafka_bootstrap: str, topics: Topics) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """Three collector processes, by their metrics port; stopped by pid at the end."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for port in free_ports(3):
            procs[port] = subprocess.Popen(
                [sys.executable, "-m", "tests.support.lag_exporter", kafka_bootstrap,
                 topics.prefix, lag_exporter_group(topics.prefix), topics.faust_leader,
                 str(port), "--session-ms", str(SESSION_MS), "--heartbeat-ms", str(HEARTBEAT_MS)],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                stop(proc)


def _wait_for_one_exporter(ports: list[int], expected: dict[tuple[str, str, str], float],
                           within: float) -> tuple[int, float]:
    """The port of the one process that exports `expected`, and the seconds it took; fails
    if two export lag series at once, or none within `within` seconds."""
    started = time.monotonic()
    while True:
        scraped = {port: _scrape(port) for port in ports}
        exporting = [port for port, (lag, _) in scraped.items() if lag]
        if len(exporting) > 1:
            # The scrapes are one after another: across a rebalance (milliseconds) they can
            # catch the old exporter before it let go and the new one after it took over, as
            # Prometheus can (hence max in the queries). Two at once must not last.
            time.sleep(0.5)
            scraped = {port: _scrape(port) for port in ports}
            exporting = [port for port, (lag, _) in scraped.items() if lag]
        assert len(exporting) <= 1, f"two processes export lag at once: {scraped}"
        if exporting and scraped[exporting[0]][0] == expected:
            port = exporting[0]
            others = {p: leader for p, (_, leader) in scraped.items() if p != port}
            assert scraped[port][1] == 1.0, scraped
            assert all(leader == 0.0 for leader in others.values()), scraped
            return port, time.monotonic() - started
        assert time.monotonic() - started < within, f"no single exporter within {within} s: " \
                                                    f"{scraped}"
        time.sleep(0.2)


def test_one_exporter_and_takeover(kafka_bootstrap: str, topics: Topics,
                                   exporters: dict[int, subprocess.Popen[bytes]]) -> None:
    group = asyncio.run(_lagging_group(kafka_bootstrap, topics))
    expected = {(group, topics.raw, str(p)): float(PRODUCED - COMMITTED if p == 0 else 0)
                for p in range(3)}
    ports = list(exporters)

    # Each member that joins moves the partition to whom the group's assignor gives it: wait
    # until all three are in, then one exports and keeps exporting.
    joined = _wait_for_members(kafka_bootstrap, lag_exporter_group(topics.prefix), 3, within=40)
    leader, took = _wait_for_one_exporter(ports, expected, within=10)
    print(f"three members after {joined:.1f} s, one exporting {took:.1f} s later")
    # It stays the only one: no flapping while nothing changes.
    settle = time.monotonic() + 3
    while time.monotonic() < settle:
        assert _wait_for_one_exporter(ports, expected, within=5)[0] == leader
        time.sleep(0.3)

    # SIGKILL: no LeaveGroup; the coordinator drops it after the session timeout.
    exporters[leader].kill()
    exporters[leader].wait()
    survivors = [p for p in ports if p != leader]
    second, took = _wait_for_one_exporter(survivors, expected, within=TAKEOVER_AFTER_KILL_S)
    print(f"takeover after SIGKILL: {took:.1f} s")
    assert took >= SESSION_MS / 1000 - 1.5  # it was the group that moved it, not a restart

    # SIGTERM: the collector leaves the group, the last one takes over at once.
    signalled = time.monotonic()
    assert stop(exporters[second]) == 0
    last = [p for p in survivors if p != second]
    third, _ = _wait_for_one_exporter(last, expected, within=TAKEOVER_AFTER_STOP_S)
    print(f"takeover after SIGTERM: {time.monotonic() - signalled:.1f} s from the signal")
    assert third == last[0]
