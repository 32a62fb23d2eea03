"""Seeking a group-less consumer to "the first record at or after a time", without losing a
record written while the seek is being worked out."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition


async def seek_to_times(consumer: AIOKafkaConsumer, starts: Mapping[TopicPartition, int]) -> None:
    """Position each partition at its first record timestamped at or after `starts[tp]` (ms).

    Where no record is that new, the partition starts at the end offset read BEFORE the time
    lookup: read after it, a record written in between would sit below that end and be skipped
    (the admin's outcome counts lost a transaction's counts that way). Read before, any record
    between that end and the lookup is older than the start, and reading it is harmless.
    """
    if not starts:
        return
    tps = list(starts)
    ends = await consumer.end_offsets(tps)
    found = await consumer.offsets_for_times(dict(starts))
    for tp in tps:
        hit = found.get(tp)
        consumer.seek(tp, hit.offset if hit is not None else ends[tp])
