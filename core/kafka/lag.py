"""Consumer group lag: how far each group's committed offsets trail the end of its partitions.

`read_lag()` is a one-shot read (the `hookstream lag` command); `LagCollector` keeps the
last read in memory, refreshes it on an interval, and exports it to Prometheus as
`hookstream_consumer_lag{group,topic,partition}`, so any service can put it on its /metrics.

Several workers each run a collector; so that the lag is exported once (not once per worker),
they elect one exporter with Kafka's own group protocol (`Election`): every collector joins
one consumer group subscribed to a one-partition topic, and the member assigned that
partition reads and exports the lag; the others read nothing and export nothing until a
rebalance hands them the partition (the exporter stopped, or died and its session expired).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.kafka import clients
from core.kafka.clients import Kafka
from core.tasks import cancel_and_wait

log = logging.getLogger(__name__)

LAG_METRIC = "hookstream_consumer_lag"
EXPORTER_METRIC = "hookstream_lag_exporter"
REQUEST_TIMEOUT_MS = 10_000
# A dead exporter is replaced once the group coordinator drops it: after the session timeout,
# plus the survivors' next heartbeat (they learn of the rebalance then) and one lag read.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 3_000


def hookstream_groups(topic_prefix: str) -> str:
    """The name prefix every consumer group of hookstream's services shares (the worker's
    `<P>hookstream-streams*`, the notifier's `<P>hookstream-notifier*`; docs/DEPLOY.md grants
    `Describe` on exactly these). On a shared cluster most groups are someone else's: reading
    only these spares two requests per foreign group on every read (issue 17)."""
    return f"{topic_prefix}hookstream-"


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int  # offset of the next record to be written (high watermark)
    lag: int  # records the group still has to read


@dataclass
class GroupInfo:
    group: str
    state: str  # Stable, Empty (no consumer running), PreparingRebalance, ... or "?"
    members: int
    lag: int = 0


@dataclass
class LagReport:
    partitions: list[PartitionLag] = field(default_factory=list)
    groups: list[GroupInfo] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def max_lag(self) -> int:
        return max((p.lag for p in self.partitions), default=0)

    def to_json(self) -> dict[str, object]:
        return {
            "partitions": [asdict(p) for p in self.partitions],
            "groups": [asdict(g) for g in self.groups],
            "total": self.total,
            "max_lag": self.max_lag,
        }


def _lag(committed: int | None, beginning: int, end: int) -> int:
    # Without a commit a group starts at the log start (hookstream consumers read "earliest"),
    # so everything still retained is lag. A commit below the log start (retention deleted
    # records) can only read from the log start too.
    start = beginning if committed is None else max(committed, beginning)
    return max(end - start, 0)


class LagReader:
    """Keeps an admin client and a group-less consumer open for repeated lag reads."""

    def __init__(self, bootstrap: Kafka) -> None:
        self.bootstrap = bootstrap
        self._admin = clients.admin(bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
        # No group_id: this consumer never joins a group nor commits; it only asks for offsets.
        self._consumer = clients.consumer(bootstrap, group_id=None,
                                          enable_auto_commit=False,
                                          request_timeout_ms=REQUEST_TIMEOUT_MS)
        self._started = False

    async def start(self) -> None:
        await self._admin.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._admin.close()
            raise
        self._started = True

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            await self._consumer.stop()
        finally:
            await self._admin.close()

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def read(self, prefix: str | None, groups: Sequence[str] | None = None, *,
                   group_prefix: str | None = None) -> LagReport:
        """Lag of every group (or of `groups`; with `group_prefix`, only of the groups named
        so) on topics starting with `prefix` (None: all). The names are filtered before any
        group's offsets are fetched (a find-coordinator and an offset-fetch request each)."""
        listed = sorted({g[0] for g in await self._admin.list_consumer_groups()})
        wanted = [g for g in listed if (not groups or g in groups)
                  and (group_prefix is None or g.startswith(group_prefix))]
        committed: dict[str, dict[TopicPartition, int | None]] = {}
        for group in wanted:
            offsets = await self._admin.list_consumer_group_offsets(group)
            mine = {tp: (om.offset if om.offset >= 0 else None) for tp, om in offsets.items()
                    if prefix is None or tp.topic.startswith(prefix)}
            if mine:
                committed[group] = mine
        if not committed:
            return LagReport()

        # Every partition of every topic a group committed on, so a partition the group never
        # committed on (yet) still shows up with its lag.
        topics = sorted({tp.topic for offs in committed.values() for tp in offs})
        all_tps: list[TopicPartition] = []
        for desc in await self._admin.describe_topics(topics):
            if desc["error_code"]:  # e.g. the topic was deleted but the group's offsets remain
                log.info("topic %s: metadata error %s; skipped", desc["topic"], desc["error_code"])
                continue
            all_tps.extend(TopicPartition(desc["topic"], p["partition"])
                           for p in sorted(desc["partitions"], key=lambda p: p["partition"]))
        try:
            begins, ends = await self._offsets(all_tps)
        except KafkaTimeoutError:
            # A topic deleted since we described it makes the whole offsets request wait:
            # drop the topics that are gone and ask once more.
            existing = set(await self._admin.list_topics())
            gone = sorted({tp.topic for tp in all_tps} - existing)
            if not gone:
                raise
            log.warning("topics deleted while reading lag, left out: %s", ", ".join(gone))
            all_tps = [tp for tp in all_tps if tp.topic in existing]
            begins, ends = await self._offsets(all_tps)

        report = LagReport()
        info = await self._describe(list(committed))
        for group, offs in committed.items():
            g = info.get(group) or GroupInfo(group, "?", 0)
            group_topics = {tp.topic for tp in offs}
            for tp in all_tps:
                if tp.topic not in group_topics:
                    continue
                c = offs.get(tp)
                lag = _lag(c, begins.get(tp, 0), ends.get(tp, 0))
                report.partitions.append(PartitionLag(group, tp.topic, tp.partition, c,
                                                      ends.get(tp, 0), lag))
                g.lag += lag
            report.groups.append(g)
        return report

    async def _offsets(self, tps: list[TopicPartition]
                       ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(log start, end) offsets of `tps`."""
        if not tps:
            return {}, {}
        # Assigned (and paused: nothing is fetched), the consumer keeps these topics in its
        # metadata; without an assignment it may not know a topic and wait until timeout.
        self._consumer.assign(tps)
        self._consumer.pause(*tps)
        return (await self._consumer.beginning_offsets(tps),
                await self._consumer.end_offsets(tps))

    async def _describe(self, groups: list[str]) -> dict[str, GroupInfo]:
        """State and member count per group; lag still reads if this fails."""
        out: dict[str, GroupInfo] = {}
        for group in groups:
            try:
                for resp in await self._admin.describe_consumer_groups([group]):
                    for g in resp.groups:
                        # (error_code, group_id, state, protocol_type, protocol, members, ...)
                        out[g[1]] = GroupInfo(g[1], g[2] or "?", len(g[5]))
            except Exception as exc:  # noqa: BLE001 - informative only; the lag is the point
                log.warning("describing consumer group %s failed: %s", group, exc)
        return out


async def read_lag(bootstrap: Kafka, prefix: str | None,
                   groups: Sequence[str] | None = None) -> LagReport:
    async with LagReader(bootstrap) as reader:
        return await reader.read(prefix, groups)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, election: Election) -> None:
        self.election = election

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.election._set(False)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        mine = [tp for tp in assigned if tp.topic == self.election.topic]
        if self.election._consumer is not None and mine:
            self.election._consumer.pause(*mine)  # held, never read
        self.election._set(TopicPartition(self.election.topic, 0) in mine)


class Election:
    """Leader election by Kafka's group protocol, no coordinator of our own: every member
    joins `group` subscribed to `topic` (one partition, which must exist); the member the
    group assigns partition 0 to is the leader. A member that stops leaves the group (the
    partition moves at once); one that dies is dropped by the coordinator after
    `session_timeout_ms`. Nothing is read (the partition is paused on assignment) nor
    committed. `changed` is set on every change of `leader`.

    Two members may both believe they lead for a moment (a partitioned leader learns of its
    eviction only when it reaches the coordinator again): consumers of the exported figures
    take `max` over the members, which makes such an overlap harmless.
    """

    def __init__(self, kafka: Kafka, group: str, topic: str, *,
                 session_timeout_ms: int = SESSION_TIMEOUT_MS,
                 heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
                 retry_seconds: float = 5.0) -> None:
        self.kafka = kafka
        self.group = group
        self.topic = topic
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.retry_seconds = retry_seconds
        self.changed = asyncio.Event()
        self._leader = False
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def leader(self) -> bool:
        return self._leader

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            log.info("%s the consumer lag exporter (group %s)",
                     "now" if leader else "no longer", self.group)
            self.changed.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hookstream-lag-election")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._set(False)
        await self._close()

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()  # leaves the group: the partition moves at once
            except Exception as exc:  # noqa: BLE001 - a broken client is discarded either way
                log.warning("closing the lag election consumer failed: %s", exc)

    async def _run(self) -> None:
        while True:
            try:
                await self._member()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - not leading; join again after a pause
                log.warning("lag exporter election (group %s) failed, joining again in %.0f s: "
                            "%s", self.group, self.retry_seconds, exc)
            self._set(False)
            await self._close()
            await asyncio.sleep(self.retry_seconds)

    async def _member(self) -> None:
        self._consumer = consumer = clients.consumer(
            self.kafka, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="latest", session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            request_timeout_ms=max(REQUEST_TIMEOUT_MS, self.session_timeout_ms + 5_000))
        consumer.subscribe([self.topic], listener=_Listener(self))
        await consumer.start()
        while True:
            # Polling keeps the member within max.poll.interval.ms and runs the rebalance
            # callbacks; the paused partition yields no records.
            await consumer.getmany(timeout_ms=1_000)


class LagCollector(Collector):
    """Prometheus collector of `hookstream_consumer_lag{group,topic,partition}`.

    Scrapes are served from the last read (a scrape never waits on Kafka); `start()` runs a
    background task that re-reads every `interval` seconds. Usage in a service:

        collector = LagCollector(bootstrap, prefix=settings.topic_prefix)
        prometheus_client.REGISTRY.register(collector)
        await collector.start()          # on shutdown: await collector.stop()

    With an `election`, only its leader reads and exports the lag (the figure is the same
    from any member, so one is enough, and sums over the members count it once); every
    member exports `hookstream_lag_exporter` (1 on the leader, 0 elsewhere).

    A failed read keeps the last figures for up to `stale_after` seconds (default four
    intervals), then exports none: a leader cut off from Kafka keeps believing it leads
    (the group moved on without it), and its old figures must not outweigh the new leader's.
    """

    def __init__(self, bootstrap: Kafka, prefix: str | None, groups: Iterable[str] | None = None,
                 interval: float = 15.0, *, election: Election | None = None,
                 stale_after: float | None = None, group_prefix: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.groups = list(groups) if groups else None
        self.group_prefix = group_prefix
        self.interval = interval
        self.election = election
        self.stale_after = 4 * interval if stale_after is None else stale_after
        self.report = LagReport()
        self._read_at = 0.0  # time.monotonic() of the last successful read
        self._task: asyncio.Task[None] | None = None
        self._reader: LagReader | None = None

    @property
    def exporting(self) -> bool:
        return self.election is None or self.election.leader

    def describe(self) -> Iterator[Metric]:
        yield _family()
        if self.election is not None:
            yield _exporter_family()

    def collect(self) -> Iterator[Metric]:
        family = _family()
        exporting = self.exporting
        if exporting:
            for p in self.report.partitions:
                family.add_metric([p.group, p.topic, str(p.partition)], p.lag)
        yield family
        if self.election is not None:
            leader = _exporter_family()
            leader.add_metric([self.election.group], 1.0 if exporting else 0.0)
            yield leader

    async def refresh(self) -> LagReport:
        if self._reader is None:
            reader = LagReader(self.bootstrap)
            await reader.start()
            self._reader = reader
        self.report = await self._reader.read(self.prefix, self.groups,
                                              group_prefix=self.group_prefix)
        self._read_at = time.monotonic()
        return self.report

    async def _loop(self) -> None:
        changed = self.election.changed if self.election is not None else asyncio.Event()
        while True:
            changed.clear()  # a change from here on ends the wait below at once
            if self.exporting:
                try:
                    await self.refresh()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep the last values, retry next round
                    if self.report.partitions and \
                            time.monotonic() - self._read_at > self.stale_after:
                        log.warning("reading consumer lag failed for over %.0f s: no lag "
                                    "figures until a read succeeds: %s", self.stale_after, exc)
                        self.report = LagReport()
                    else:
                        log.warning("reading consumer lag failed (keeping the last values): %s",
                                    exc)
                    await self._drop_reader()
                timeout: float | None = self.interval
            else:
                # Not the exporter: no reads, no lag clients, no stale figures once elected.
                self.report = LagReport()
                await self._drop_reader()
                timeout = None
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                pass  # the next round

    async def _drop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                await reader.close()
            except Exception as exc:  # noqa: BLE001 - a broken client is discarded either way
                log.warning("closing the lag reader failed: %s", exc)

    async def start(self) -> None:
        if self._task is None:
            if self.election is not None:
                await self.election.start()
            self._task = asyncio.create_task(self._loop(), name="hookstream-lag-collector")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self.election is not None:
            await self.election.stop()
        await self._drop_reader()


def _family() -> GaugeMetricFamily:
    # The literal name (not LAG_METRIC) lets the dashboard test find it by scanning the source.
    return GaugeMetricFamily("hookstream_consumer_lag", "Records a consumer group still has to "
                             "read, per topic partition (end - committed).",
                             labels=["group", "topic", "partition"])


def _exporter_family() -> GaugeMetricFamily:
    return GaugeMetricFamily("hookstream_lag_exporter", "1 on the one member of the lag "
                             "exporter election (Kafka consumer group `election`) that exports "
                             "hookstream_consumer_lag, 0 on the others.", labels=["election"])
