"""The raw loop: `webhooks.raw` -> invitations, DLQ records and errors, exactly once.

Not a Faust agent: an aiokafka transactional consume-transform-produce loop
(streams/txloop.py) that the Faust worker hosts (streams/app.py starts it in its service
tree). Every output of a batch and the batch's offsets commit in one Kafka transaction, so a
crash never yields a duplicate invitation for read_committed readers
(tests/streams/test_exactly_once.py kills the worker mid-stream). Faust's own
`processing_guarantee="exactly_once"` was tried with the same kill scenario
(bench/faust_eos.py): about 1,000 duplicate invitations out of 5,000 per kill, as a
read_committed reader sees them (faust-streaming/faust issue 517), so it is not used.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import ConsumerRecord, TopicPartition

from automations.bodies import MAX_DEPTH
from automations.config_cache import ConfigCache
from core.kafka.clients import Kafka
from core.kafka.headers import RECEIVED_AT, header, integer
from core.kafka.topics import Topics
from core.tasks import cancel_and_wait
from streams.records import Output, RawRecord
from streams.transform import Transformer
from streams.txloop import AfterCommit, LoopConfig, TransactionalLoop

log = logging.getLogger(__name__)

# A snapshot published just before the ingress accepted a webhook may reach this worker's
# config cache a moment after the webhook: wait this long after received-at before calling an
# automation unknown. Records older than that are judged at once.
CONFIG_GRACE_S = 2.0
# The raw topic's fetch wait (setting worker_raw_fetch_wait_ms): shorter than the other
# consumers' (core.kafka.clients.IDLE_FETCH_WAIT_MS), since a fetch of idle partitions holds a
# busy one back this long after a slow transaction (LoopConfig.fetch_max_wait_ms).
RAW_FETCH_MAX_WAIT_MS = 100
# Between one transaction's end and the next one's beginning (setting worker_commit_gap_ms,
# LoopConfig.commit_gap_ms): enough for the coordinator to write the last commit's markers.
RAW_COMMIT_GAP_MS = 4.0


class RawProcessor:
    def __init__(self, bootstrap: Kafka, topics: Topics, group_id: str, config: ConfigCache,
                 day_seconds: float, max_records: int = 6000, smtp_utf8: bool = False,
                 max_attempts: int = 5, backoff_s: float = 0.5,
                 backoff_max_s: float = 30.0, max_depth: int = MAX_DEPTH,
                 fetch_max_wait_ms: int = RAW_FETCH_MAX_WAIT_MS,
                 commit_gap_ms: float = RAW_COMMIT_GAP_MS) -> None:
        self.config = config
        self.transformer = Transformer(topics, config.get, day_seconds, smtp_utf8=smtp_utf8,
                                       max_depth=max_depth)
        self.counts_topic = topics.counts
        self.loop = TransactionalLoop(
            LoopConfig("streams", bootstrap, group_id, topics.raw, max_records=max_records,
                       max_attempts=max_attempts, backoff_s=backoff_s,
                       backoff_max_s=backoff_max_s, fetch_max_wait_ms=fetch_max_wait_ms,
                       commit_gap_ms=commit_gap_ms),
            self._handle, dead_letter=self._dead_letter)
        self._task: asyncio.Task[None] | None = None
        self._config_changed = asyncio.Event()
        config.add_listener(lambda _id, _snap: self._config_changed.set())

    async def start(self) -> None:
        await self.loop.start()
        self._task = asyncio.create_task(self.loop.run(), name="streams-raw")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.loop.stop()

    def failed(self) -> BaseException | None:
        t = self._task
        if t is not None and t.done() and not t.cancelled():
            return t.exception()
        return None

    async def _handle(self, tp: TopicPartition, records: list[ConsumerRecord]
                      ) -> tuple[list[Output], AfterCommit | None]:
        outputs: list[Output] = []
        transform = self.transformer.transform
        tally = self.transformer.tally
        tally.clear()  # counts of an attempt that raised are not this batch's
        known: bytes | None = None  # the last key found configured: no need to look again
        for i, r in enumerate(records):
            if i % 256 == 255:
                await asyncio.sleep(0)  # let the scheduler's release and heartbeats run
            key = r.key
            if key is not None and key != known:
                if self.config.get(key.decode("utf-8", "replace")) is None:
                    await self._grace(r)
                else:
                    known = key
            outputs += transform(RawRecord(key, r.value, r.headers, r.partition, r.offset,
                                           r.timestamp))
        self.transformer.flush_metrics()  # per batch, not per record (issue 17)
        # The batch's counts commit in its transaction: summed, they are exact.
        outputs += [Output(self.counts_topic, k, v, [])
                    for k, v in tally.drain(int(time.time() * 1000))]
        return outputs, None

    def _dead_letter(self, tp: TopicPartition, r: ConsumerRecord, reason: str,
                     detail: str) -> list[Output]:
        """A record the loop gave up on: to the DLQ with an AutomationError (and its count)."""
        tally = self.transformer.tally
        tally.clear()  # what the failed attempts counted is not this record's outcome
        outputs = self.transformer.dead_letter(
            RawRecord(r.key, r.value, r.headers or (), r.partition, r.offset, r.timestamp),
            reason, detail)
        return outputs + [Output(self.counts_topic, k, v, [])
                          for k, v in tally.drain(int(time.time() * 1000))]

    async def _grace(self, r: ConsumerRecord) -> None:
        """Give a fresh record's automation a moment to appear in the config cache."""
        assert r.key is not None
        automation_id = r.key.decode("utf-8", "replace")
        received_s = (integer(header(r.headers, RECEIVED_AT)) or r.timestamp) / 1000.0
        deadline = received_s + CONFIG_GRACE_S
        while self.config.get(automation_id) is None:
            remaining = deadline - time.time()
            if remaining <= 0:
                return
            self._config_changed.clear()
            try:
                await asyncio.wait_for(self._config_changed.wait(), remaining)
            except TimeoutError:
                return  # still unknown after the grace: the caller records the failure
