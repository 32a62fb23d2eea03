"""An in-memory view of every automation, following the compacted `automations.config` topic.

A plain consumer without a group (every process reads the whole topic; no rebalances, no
missed keys) reads from the beginning, marks itself ready once it has caught up with the end
offsets seen at start, and keeps following so changes apply as soon as a fetch returns them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from automations.snapshot import AutomationSnapshot
from core.kafka import clients
from core.kafka.clients import Kafka
from core.tasks import cancel_and_wait
from schemas import codec

log = logging.getLogger(__name__)

Listener = Callable[[str, AutomationSnapshot | None], None]


class ConfigCache:
    def __init__(self, bootstrap: Kafka, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._automations: dict[str, AutomationSnapshot] = {}
        self._listeners: list[Listener] = []
        self.ready = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def get(self, automation_id: str) -> AutomationSnapshot | None:
        return self._automations.get(automation_id)

    def all(self) -> dict[str, AutomationSnapshot]:
        return dict(self._automations)

    def __len__(self) -> int:
        return len(self._automations)

    def add_listener(self, listener: Listener) -> None:
        """Called with (id, snapshot or None on delete) after every applied change."""
        self._listeners.append(listener)

    async def start(self, wait_ready: float | None = 30.0) -> None:
        # A new snapshot is answered at once; the wait bounds only idle polls (the constant).
        self._consumer = clients.consumer(
            self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=clients.IDLE_FETCH_WAIT_MS)
        await self._consumer.start()
        partitions = await self._wait_for_partitions()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        end = await self._consumer.end_offsets(tps)
        self._task = asyncio.create_task(self._follow(end), name=f"config-cache:{self.topic}")
        if wait_ready is not None:
            await asyncio.wait_for(self.ready.wait(), wait_ready)

    async def _wait_for_partitions(self, timeout: float = 30.0) -> set[int]:
        assert self._consumer is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self.topic)
            if partitions:
                return partitions
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topic {self.topic} does not exist; is the control plane "
                                   "running (it creates and fills it)?")
            await asyncio.sleep(0.2)

    async def _follow(self, end: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        pending = {tp: off for tp, off in end.items() if off > 0}
        if not pending:
            self.ready.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for rec in records:
                    self._apply(rec.key, rec.value)
                if tp in pending and records and records[-1].offset + 1 >= pending[tp]:
                    del pending[tp]
            if pending:
                # Compaction can leave the last offsets empty: compare with the position too.
                for tp in list(pending):
                    if await self._consumer.position(tp) >= pending[tp]:
                        del pending[tp]
            if not pending and not self.ready.is_set():
                self.ready.set()
                log.info("config loaded: %d automations from %s", len(self), self.topic)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            log.warning("ignoring a record without key on %s", self.topic)
            return
        automation_id = key.decode()
        snapshot: AutomationSnapshot | None
        if value is None:
            snapshot = None
            self._automations.pop(automation_id, None)
        else:
            try:
                snapshot = AutomationSnapshot.from_record(
                    codec.decode_as("AutomationSnapshot", value))
            except (codec.CodecError, KeyError, ValueError) as exc:
                log.error("skipping an undecodable snapshot of %s: %s", automation_id, exc)
                return
            current = self._automations.get(automation_id)
            if current is not None and current.version > snapshot.version:
                return  # an older snapshot republished late; the newer one stands
            self._automations[automation_id] = snapshot
        for listener in self._listeners:
            listener(automation_id, snapshot)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
